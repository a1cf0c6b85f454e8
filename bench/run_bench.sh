#!/bin/bash
# Builds and runs both bench modes with short defaults.
#   bench/run_bench.sh                 # compare (5s per phase) + 30s soak
#   DURATION=2s SOAK_DURATION=300s bench/run_bench.sh
#   bench/run_bench.sh --concurrency=4 # extra flags go to the compare run
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-5s}"
SOAK_DURATION="${SOAK_DURATION:-30s}"
JOBS="${JOBS:-2}"

bazel build --jobs="$JOBS" //bench:pyexec_bench //bench:echo_server_main \
  //server:pyexecd //worker:pyexec_worker

bin="$(bazel info bazel-bin 2>/dev/null)"
export PYEXECD="${PYEXECD:-$bin/server/pyexecd}"

echo "== compare: pyexec Eval vs bare gRPC echo =="
"$bin/bench/pyexec_bench" --mode=compare --duration="$DURATION" "$@"

echo
echo "== soak: mixed load with injected faults ($SOAK_DURATION) =="
"$bin/bench/pyexec_bench" --mode=soak --duration="$SOAK_DURATION"
