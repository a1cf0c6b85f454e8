#!/usr/bin/env bash
# Tests of the Node/TypeScript client: installs the locked npm dependencies
# (npm ci, package-lock.json), compiles with tsc, then runs `node --test`:
# value-mapping unit tests, the client against a real pyexecd (streams,
# refs and Interrupt included), the
# `conformance` runner (clients/conformance/vectors.json), and TLS/mTLS/bearer
# against a fake server with certificates made by openssl. Every server
# listens on 127.0.0.1, port 0.
#
#   clients/node/run_tests.sh
#
# PYEXECD: the pyexecd binary; default <repo>/bazel-bin/server/pyexecd
# (build: bazel build //server:pyexecd //worker:pyexec_worker).
# Needs node >= 18 and npm on PATH (scripts/install_deps.sh installs Debian's
# nodejs and npm when there is no node), and openssl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

export PYEXECD="${PYEXECD:-$root/bazel-bin/server/pyexecd}"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "run_tests.sh: node and npm are needed (scripts/install_deps.sh)" >&2
  exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if ((major < 18)); then
  echo "run_tests.sh: node >= 18 needed, found $(node --version)" >&2
  exit 1
fi
if [ ! -x "$PYEXECD" ]; then
  echo "run_tests.sh: pyexecd not found at $PYEXECD" >&2
  exit 1
fi

npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
node --test dist/test/*.test.js
