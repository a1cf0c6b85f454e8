#!/usr/bin/env bash
# Tests of the Go client, in module mode and offline: no module proxy and no
# module cache. The module's dependencies come from Debian's Go sources in
# /usr/share/gocode (golang-google-grpc-dev, golang-google-protobuf-dev,
# golang-github-golang-protobuf-1-5-dev and what they pull in), as a vendor/
# directory that debian_vendor.sh assembles in a temporary copy of the module
# root made of symlinks to this folder's entries: the checkout is never
# written to (it may be read-only) and concurrent runs share nothing.
#
#   clients/go/run_tests.sh          # stubs current, gofmt, vet, go test (conformance
#                                    # included), then a scratch module that requires this one
#   clients/go/run_tests.sh bench    # the bench: Go client vs the echo baseline
#   clients/go/run_tests.sh race     # go test -race of the client package only
#                                    # (not in the default run: it doubles its time)
#
# PYEXECD: the pyexecd binary; default <repo>/bazel-bin/server/pyexecd.
# ECHO_SERVER (bench): default <repo>/bazel-bin/bench/echo_server_main.
# Build them: bazel build //server:pyexecd //worker:pyexec_worker //bench:echo_server_main
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
what="${1:-test}"
module=github.com/pyexec/pyexec/clients/go

export PYEXECD="${PYEXECD:-$root/bazel-bin/server/pyexecd}"
export GO111MODULE=on GOFLAGS="-mod=vendor -trimpath" GOPROXY=off GOSUMDB=off GOWORK=off GOTOOLCHAIN=local
export GOCACHE="${GOCACHE:-${HOME:-/tmp}/.cache/go-build}"

if [ ! -x "$PYEXECD" ]; then
  echo "run_tests.sh: pyexecd not found at $PYEXECD" >&2
  echo "  build it: (cd $root && bazel build //server:pyexecd //worker:pyexec_worker)" >&2
  exit 1
fi

tmp="$(mktemp -d)"
pyexecd_pid=""
cleanup() {
  stop_pyexecd
  rm -rf "$tmp"
}
trap cleanup EXIT

# start_pyexecd runs $PYEXECD on 127.0.0.1:0, as the Go tests do, and sets
# pyexecd_addr from its "listening on HOST:PORT" line (the only line it writes
# to stdout). `timeout` bounds its life should this script be killed.
start_pyexecd() {
  coproc PYEXECD_OUT {
    exec timeout -k 5 300 "$PYEXECD" --listen=127.0.0.1:0 --workers=1 --max_workers=2 \
      --drain_timeout=1s --kill_grace=1s 2>"$tmp/pyexecd.log"
  }
  pyexecd_pid=$PYEXECD_OUT_PID
  local line=""
  if ! read -r -t 60 -u "${PYEXECD_OUT[0]}" line || [[ $line != "listening on "* ]]; then
    echo "run_tests.sh: pyexecd did not print 'listening on' within 60 s; its log:" >&2
    tail -n 20 "$tmp/pyexecd.log" >&2
    return 1
  fi
  pyexecd_addr="${line#listening on }"
}

# stop_pyexecd sends SIGTERM (pyexecd drains and exits; timeout SIGKILLs it
# 5 s later if it has not) and waits for it.
stop_pyexecd() {
  if [ -n "$pyexecd_pid" ]; then
    kill -TERM "$pyexecd_pid" 2>/dev/null || true
    wait "$pyexecd_pid" 2>/dev/null || true
    pyexecd_pid=""
  fi
}

mod="$tmp/mod"
mkdir "$mod"
for entry in "$here"/*; do
  [ "$(basename "$entry")" = vendor ] || ln -s "$entry" "$mod/"
done
"$here/debian_vendor.sh" "$mod"
cd "$mod"
# The module's packages. Listed, because `./...` does not follow symlinks.
mapfile -t pkgs < <(cd "$here" && find . \( -name testdata -o -name vendor \) -prune -o \
  -name '*.go' -printf '%h\n' | sort -u)

if [ "$what" = "bench" ]; then
  go build -o "$tmp/bench" ./bench
  "$tmp/bench" -pyexecd "$PYEXECD" \
    -echo_server "${ECHO_SERVER:-$root/bazel-bin/bench/echo_server_main}" "${@:2}"
  exit
fi

if [ "$what" = "race" ]; then
  go test -race -count=1 -timeout=600s ./pyexec
  exit
fi

"$here/gen.sh" --check
unformatted="$(cd "$here" && gofmt -l "${pkgs[@]}" testdata)"
if [ -n "$unformatted" ]; then
  echo "run_tests.sh: not gofmt-formatted: $unformatted" >&2
  exit 1
fi
go vet "${pkgs[@]}"
# -v so that the conformance line and every test's result are in the log.
go test -count=1 -timeout=300s -v ./pyexec 2>&1 | grep -v -E '^(=== (RUN|PAUSE|CONT)|    --- PASS)'

# A program in a module of its own, outside the repository, that requires
# this module through a replace directive to this checkout, exactly as the
# README tells users, built in module mode from Debian's sources, then run
# against a pyexecd.
scratch="$tmp/scratch"
mkdir "$scratch"
cp "$here/testdata/scratch/main.go" "$scratch/"
(
  cd "$scratch"
  go mod init example.com/scratch
  go mod edit -require="$module@v0.0.0-00010101000000-000000000000" \
    -replace="$module=$here"
)
"$here/debian_vendor.sh" "$scratch"
(cd "$scratch" && go vet . && go build -o scratch .)
start_pyexecd
got="$(timeout 60 "$scratch/scratch" "$pyexecd_addr")"
stop_pyexecd
if [ "$got" != "int64 42" ]; then
  echo "run_tests.sh: the scratch module's program printed '$got', want 'int64 42'" >&2
  exit 1
fi
echo "ok   scratch module: requires $module via replace, built in module mode offline, Eval against pyexecd"
