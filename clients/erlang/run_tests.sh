#!/usr/bin/env bash
# Tests of the Erlang client: compile (offline, no dependencies), xref,
# EUnit (codec, HPACK/RFC 7541 Appendix C, framing), then the Common Test
# suites, which start a real pyexecd (and a grpcio test server) themselves,
# and last a scratch rebar3 project that takes this client as a git_subdir
# dependency (scripts/check_rebar3_dep.sh: needs git; checks HEAD).
#
#   clients/erlang/run_tests.sh            # everything
#   clients/erlang/run_tests.sh eunit      # EUnit only (no server needed)
#
# The OTP application is clients/erlang/pyexec (rebar3 wants a dependency's
# directory to carry the application's name).
# PYEXECD: the pyexecd binary; default <repo>/bazel-bin/server/pyexecd
# (build: bazel build //server:pyexecd //worker:pyexec_worker).
# Needs: erlang-nox erlang-dev rebar3 erlang-common-test erlang-eunit, and
# /usr/bin/python3 with grpcio (python3-grpcio) for the HTTP/2 suite and
# python3-protobuf + protoc (protobuf-compiler) for the codec check.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

export PYEXECD="${PYEXECD:-$root/bazel-bin/server/pyexecd}"
what="${1:-all}"

# The protobuf codec is generated from the .proto: fail if it is stale.
/usr/bin/python3 "$here/scripts/gen_pyexec_pb.py" --check
cd "$here/pyexec"
rebar3 compile
rebar3 xref
rebar3 eunit

if [ "$what" = "eunit" ]; then
  exit 0
fi

if [ ! -x "$PYEXECD" ]; then
  echo "run_tests.sh: pyexecd not found at $PYEXECD" >&2
  echo "  build it: (cd $root && bazel build //server:pyexecd //worker:pyexec_worker)" >&2
  exit 1
fi
rebar3 ct --verbose=false
# The client as a rebar3 dependency (git_subdir) of a scratch project.
"$here/scripts/check_rebar3_dep.sh"
