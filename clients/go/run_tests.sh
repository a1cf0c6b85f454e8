#!/usr/bin/env bash
# Tests of the Go client, offline: no Go module proxy is used. The package
# builds in GOPATH mode against Debian's Go sources in /usr/share/gocode
# (golang-google-grpc-dev, golang-google-protobuf-dev,
# golang-github-golang-protobuf-1-5-dev), through a throwaway GOPATH whose
# src/pyexec.dev/go is a symlink to this folder.
#
#   clients/go/run_tests.sh          # stubs current, gofmt, vet, go test (conformance included)
#   clients/go/run_tests.sh bench    # the bench: Go client vs the echo baseline
#
# PYEXECD: the pyexecd binary; default <repo>/bazel-bin/server/pyexecd.
# ECHO_SERVER (bench): default <repo>/bazel-bin/bench/echo_server_main.
# Build them: bazel build //server:pyexecd //worker:pyexec_worker //bench:echo_server_main
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
what="${1:-test}"

export PYEXECD="${PYEXECD:-$root/bazel-bin/server/pyexecd}"
export GO111MODULE=off GOPROXY=off GOFLAGS= GOTOOLCHAIN=local
export GOCACHE="${GOCACHE:-${HOME:-/tmp}/.cache/go-build}"
gopath="$(mktemp -d)"
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/pyexec.dev"
ln -s "$here" "$gopath/src/pyexec.dev/go"
export GOPATH="$gopath:/usr/share/gocode"
cd "$gopath/src/pyexec.dev/go"
pkgs=(./pyexec ./pyexecv1 ./internal/echopb ./bench)

if [ ! -x "$PYEXECD" ]; then
  echo "run_tests.sh: pyexecd not found at $PYEXECD" >&2
  echo "  build it: (cd $root && bazel build //server:pyexecd //worker:pyexec_worker)" >&2
  exit 1
fi

if [ "$what" = "bench" ]; then
  go build -o "$gopath/bench" ./bench
  exec "$gopath/bench" -pyexecd "$PYEXECD" \
    -echo_server "${ECHO_SERVER:-$root/bazel-bin/bench/echo_server_main}" "${@:2}"
fi

"$here/gen.sh" --check
unformatted="$(gofmt -l pyexec bench)"
if [ -n "$unformatted" ]; then
  echo "run_tests.sh: not gofmt-formatted: $unformatted" >&2
  exit 1
fi
go vet "${pkgs[@]}"
# -v so that the conformance line and every test's result are in the log.
go test -count=1 -timeout=300s -v ./pyexec 2>&1 | grep -v -E '^(=== (RUN|PAUSE|CONT)|    --- PASS)' 
