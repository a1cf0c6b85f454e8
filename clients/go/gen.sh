#!/usr/bin/env bash
# Regenerates the committed Go stubs from the repo's .proto files with
# Debian's protoc, protoc-gen-go (package protoc-gen-go) and protoc-gen-go-grpc.
#
#   clients/go/gen.sh           # rewrite pyexecv1/ and internal/echopb/
#   clients/go/gen.sh --check   # fail if the committed stubs are not current
#
# The stubs are committed so that the package builds with nothing but the Go
# toolchain and Debian's Go sources; run_tests.sh runs --check so a .proto
# change without a regeneration fails CI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
mod=github.com/pyexec/pyexec/clients/go

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

protoc -I "$root/proto" \
  --go_out="$out" --go_opt=module=$mod \
  --go_opt=Mpyexec/v1/pyexec.proto=$mod/pyexecv1\;pyexecv1 \
  --go-grpc_out="$out" --go-grpc_opt=module=$mod \
  --go-grpc_opt=Mpyexec/v1/pyexec.proto=$mod/pyexecv1\;pyexecv1 \
  pyexec/v1/pyexec.proto
protoc -I "$root/bench" \
  --go_out="$out" --go_opt=module=$mod \
  --go_opt=Mecho.proto=$mod/internal/echopb\;echopb \
  --go-grpc_out="$out" --go-grpc_opt=module=$mod \
  --go-grpc_opt=Mecho.proto=$mod/internal/echopb\;echopb \
  echo.proto

if [ "${1:-}" = "--check" ]; then
  status=0
  for f in pyexecv1/pyexec.pb.go pyexecv1/pyexec_grpc.pb.go \
           internal/echopb/echo.pb.go internal/echopb/echo_grpc.pb.go; do
    if ! cmp -s "$out/$f" "$here/$f"; then
      echo "gen.sh: clients/go/$f is not current; run clients/go/gen.sh" >&2
      status=1
    fi
  done
  exit $status
fi
for d in pyexecv1 internal/echopb; do
  mkdir -p "$here/$d"
  cp "$out/$d"/*.go "$here/$d/"
done
