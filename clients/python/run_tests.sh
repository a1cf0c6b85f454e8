#!/usr/bin/env bash
# Tests of the Python client (unittest) against a real pyexecd: value mapping,
# the sync and asyncio clients, live output, wait_for_ready and back-off,
# streams (exact order and completeness), TLS/mTLS/bearer token against a fake
# server, leases (a SIGKILLed client's sessions end), callbacks (register_function),
# the interrupt race (1000 rounds), status mapping and retries (scripted fake),
# owner routing (two replicas with --peers), snapshot/restore, the `conformance` runner (clients/conformance/vectors.json, sync +
# aio), the README's python examples, and the package as users get it
# (test_package: pip install into a --system-site-packages venv, the sdist, a
# program outside the repo, mypy --strict on user code, a read-only checkout).
# First, mypy --strict checks the package itself (pyproject.toml's [tool.mypy]).
# pyexecd comes from $PYEXECD, else <repo>/bazel-bin/server/pyexecd.
#
# Usage: clients/python/run_tests.sh [unittest names, e.g. test_conformance]
# Uses Debian's /usr/bin/python3 (python3-grpcio, python3-protobuf; for
# test_package also python3-venv, python3-setuptools, python3-wheel) and
# generates the stubs with protoc + grpc_python_plugin into a temp dir
# ($PYEXEC_CLIENT_STUBS): nothing is written into the tree.
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
  tests=(test_values test_client test_options test_retry test_streams_refs test_tls_auth test_leases
         test_callbacks test_interrupts test_owner_routing test_snapshot test_conformance test_readme
         test_package)
fi
if ((! $#)); then
  # Debian's mypy, no cache left behind; the config is pyproject.toml's.
  (cd "$here" && mypy --cache-dir=/dev/null --python-executable /usr/bin/python3 \
    pyexec_client build_stubs.py setup.py)
fi
cd "$here/tests"
timeout --signal=TERM --kill-after=30 600 /usr/bin/python3 -B -m unittest -v "${tests[@]}"
