#!/usr/bin/env bash
# Generates the pyexec.v1 stubs (pyexec_pb2.py, pyexec_pb2_grpc.py) from
# proto/pyexec/v1/pyexec.proto into OUT_DIR, for a source checkout: point
# $PYEXEC_CLIENT_STUBS at OUT_DIR and import pyexec_client from
# clients/python. An installed package has its own stubs (its build runs the
# same build_stubs.py). Needs protoc and grpc_python_plugin.
#
# Usage: clients/python/gen_stubs.sh OUT_DIR
set -euo pipefail
if (($# != 1)); then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1"
/usr/bin/python3 -B "$here/build_stubs.py" "$1" >/dev/null
echo "$1"
