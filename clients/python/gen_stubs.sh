#!/usr/bin/env bash
# Generates the pyexec.v1 Python stubs from proto/pyexec/v1/pyexec.proto with
# Debian's protoc and grpc_python_plugin. The stubs are build output, never
# committed: pyexec_client imports them from $PYEXEC_CLIENT_STUBS, else from
# clients/python/build/gen (this script's default output), and generates them
# there itself on first import when protoc is available.
#
# Usage: clients/python/gen_stubs.sh [OUT_DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-${PYEXEC_CLIENT_STUBS:-$here/build/gen}}"
mkdir -p "$out"
protoc -I "$repo/proto" --python_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
  "$repo/proto/pyexec/v1/pyexec.proto"
echo "$out"
