#!/usr/bin/env bash
# Quick start, command 2: installs what the tests need, builds everything and
# runs every suite: C++ unit and integration tests (Bazel), the Python grpcio
# integration and fault-injection suites, and the Erlang client's EUnit and
# Common Test suites. All servers under test listen on loopback, port 0.
#
#   scripts/test.sh                # everything
#   SUITES="bazel python" scripts/test.sh
#   SUITES="fuzz asan tsa" scripts/test.sh   # clang: fuzz smoke, sanitizers, -Wthread-safety
#
# Ends with one line "N passed, M failed" (suites) and exits non-zero if any
# suite failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

scripts/install_deps.sh || exit 1

suites="${SUITES:-bazel python erlang pyclient scaleout container go node fuzz asan tsa}"
passed=0
failed=0
failed_names=()
# Each suite's output is also kept, so that the end of the run can repeat what
# failed: CI shows only the tail of a long run.
logs="$(mktemp -d -t pyexec_test_logs.XXXXXX)"
trap 'rm -rf "$logs"' EXIT
failure_digest=""

# The lines of a failed suite's log that name what failed: unittest FAIL/ERROR
# blocks with their tracebacks, Bazel FAILED targets, go test, node --test and
# Common Test failures. Capped, so the digest stays within CI's tail.
digest_of() {
  grep -E -A16 '^(FAIL|ERROR): ' "$1" | grep -v '^--$' | head -n 60
  grep -E -A6 'FAILED in|^--- FAIL|^not ok |%%% .*FAILED|Failed [0-9]+ tests|^---- pyexecd stderr during' "$1" \
    | grep -v '^--$' | head -n 30
}

run_suite() {
  local name="$1"; shift
  echo
  echo "=== $name ==="
  local start=$SECONDS
  local log="$logs/suite$((passed + failed)).log"
  # Not a pipe into tee: a daemon a suite leaves behind could hold a pipe open
  # and stall the run; a process substitution is not waited for.
  if "$@" > >(tee "$log") 2>&1; then
    echo "=== $name: PASSED in $((SECONDS - start))s ==="
    passed=$((passed + 1))
  else
    echo "=== $name: FAILED in $((SECONDS - start))s ==="
    failed=$((failed + 1))
    failed_names+=("$name")
    sleep 1  # let tee write the last lines
    failure_digest+=$'\n'"--- what failed in: $name"$'\n'"$(digest_of "$log")"$'\n'
  fi
}

echo "=== build ==="
if ! bazel build //...; then
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi
export PYEXECD="$root/bazel-bin/server/pyexecd"

for suite in $suites; do
  case "$suite" in
    bazel)
      run_suite "C++ unit and integration tests (bazel test //...)" \
        bazel test //... --test_output=errors ;;
    python)
      run_suite "Python grpcio integration and fault-injection tests" \
        integration_tests/run_python_tests.sh ;;
    erlang)
      run_suite "Erlang client: EUnit and Common Test" \
        clients/erlang/run_tests.sh ;;
    pyclient)
      run_suite "Python client: unittest and conformance" clients/python/run_tests.sh ;;
    scaleout)
      run_suite "Scale-out: 3 replicas behind nginx and HAProxy, manifests, metrics" \
        integration_tests/run_python_tests.sh test_scaleout ;;
    container)
      run_suite "Container: the image built with podman, run under the manifests' securityContext" \
        integration_tests/container/run_container_tests.sh ;;
    go)
      run_suite "Go client: go test with conformance" clients/go/run_tests.sh ;;
    node)
      run_suite "Node client: node --test" clients/node/run_tests.sh ;;
    fuzz)
      run_suite "libFuzzer smoke, 20 s per target (scripts/fuzz.sh)" scripts/fuzz.sh ;;
    asan)
      run_suite "ASan+UBSan: C++ unit tests and fuzz regressions (--config=asan)" \
        bazel test --config=asan //common/... //context_pool/... //worker/... //server/... //clients/cpp/... ;;
    tsa)
      run_suite "clang thread-safety analysis build (--config=tsa)" \
        bazel build --config=tsa //... ;;
    *)
      echo "unknown suite: $suite"; failed=$((failed + 1)); failed_names+=("$suite") ;;
  esac
done

echo
if ((failed)); then
  echo "$failure_digest"
  echo "failed suites: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
((failed == 0))
