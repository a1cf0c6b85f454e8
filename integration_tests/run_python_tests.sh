#!/usr/bin/env bash
# Runs the Python (grpcio) integration and fault-injection suites against the
# real pyexecd. Expects the server and worker to be built; the binary is taken
# from $PYEXECD, else <repo>/bazel-bin/server/pyexecd.
#
# Usage: integration_tests/run_python_tests.sh [unittest args, e.g. test_core.ValuesTest]
# Uses Debian's /usr/bin/python3 with python3-grpcio and python3-protobuf; the
# stubs are generated with Debian's protoc + grpc_python_plugin into a temp dir.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
python=/usr/bin/python3

export PYEXECD="${PYEXECD:-$repo/bazel-bin/server/pyexecd}"
if [[ ! -x "$PYEXECD" ]]; then
  echo "run_python_tests: pyexecd not found at $PYEXECD (build //server:pyexecd or set PYEXECD)" >&2
  exit 1
fi

stubs="$(mktemp -d -t pyexec_py_stubs.XXXXXX)"
trap 'rm -rf "$stubs"' EXIT
mkdir -p "$stubs/_src/grpcstd"
cp -r /usr/share/grpc-proto/grpc/health /usr/share/grpc-proto/grpc/reflection "$stubs/_src/grpcstd/"
plugin=--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin
protoc -I "$repo/proto" --python_out="$stubs" --grpc_python_out="$stubs" "$plugin" \
  "$repo/proto/pyexec/v1/pyexec.proto"
# Health and reflection live under the Python package `grpcstd` so that they
# do not shadow the installed `grpc` package; their proto packages are unchanged.
(cd "$stubs/_src" && protoc -I . --python_out="$stubs" --grpc_python_out="$stubs" "$plugin" \
  grpcstd/health/v1/health.proto grpcstd/reflection/v1alpha/reflection.proto \
  grpcstd/reflection/v1/reflection.proto)
"$python" -c "import sys; sys.path.insert(0, '$stubs'); import pyexec.v1.pyexec_pb2_grpc, grpcstd.health.v1.health_pb2_grpc, grpcstd.reflection.v1.reflection_pb2_grpc"
export PYEXEC_PY_STUBS="$stubs"

cd "$here"
if (($#)); then
  # A hard cap on the whole run; each test also has its own watchdog.
  exec timeout --signal=TERM --kill-after=30 900 "$python" -B -m unittest -v "$@"
fi
timeout --signal=TERM --kill-after=30 900 "$python" -B -m unittest -v \
  test_core test_robustness test_drain test_chaos test_repl test_confinement test_security \
  test_isolation test_zygote test_streams_refs test_callbacks test_leases test_async test_snapshots \
  test_docs
# The security and confinement suites again in the non-root form: pyexecd
# as uid 10001 (the container image's user), its test files handed to it;
# and that nothing a session started outlives a SIGKILLed pyexecd there too.
PYEXEC_TEST_SERVER_UID=10001 timeout --signal=TERM --kill-after=30 600 \
  "$python" -B -m unittest -v test_security test_confinement test_core.OrphanTest \
  test_zygote.ZygoteDeathTest
