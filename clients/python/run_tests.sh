#!/usr/bin/env bash
# Tests of the Python client (unittest) against a real pyexecd: value mapping,
# the sync and asyncio clients, TLS/mTLS/bearer token against a fake server,
# and the `conformance` runner (clients/conformance/vectors.json, sync + aio);
# first, mypy checks the package's type hints.
# pyexecd comes from $PYEXECD, else <repo>/bazel-bin/server/pyexecd.
#
# Usage: clients/python/run_tests.sh [unittest names, e.g. test_conformance]
# Uses Debian's /usr/bin/python3 (python3-grpcio, python3-protobuf) and
# generates the stubs with protoc + grpc_python_plugin into a temp dir.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export PYEXECD="${PYEXECD:-$repo/bazel-bin/server/pyexecd}"
if [[ ! -x "$PYEXECD" ]]; then
  echo "run_tests: pyexecd not found at $PYEXECD (build //server:pyexecd or set PYEXECD)" >&2
  exit 1
fi
stubs="$(mktemp -d -t pyexec_client_stubs.XXXXXX)"
trap 'rm -rf "$stubs"' EXIT
"$here/gen_stubs.sh" "$stubs" >/dev/null
export PYEXEC_CLIENT_STUBS="$stubs"
if (($#)); then
  tests=("$@")
else
  tests=(test_values test_client test_streams_refs test_tls_auth test_conformance)
fi
if ((! $#)); then
  # The public API is fully typed: check it (Debian's mypy, no cache left behind).
  (cd "$here" && mypy --cache-dir=/dev/null --python-executable /usr/bin/python3 \
    --ignore-missing-imports --disallow-untyped-defs --disallow-incomplete-defs pyexec_client)
fi
cd "$here/tests"
timeout --signal=TERM --kill-after=30 600 /usr/bin/python3 -B -m unittest -v "${tests[@]}"
