#!/usr/bin/env bash
# Tests of the Node/TypeScript client. `npm ci` installs the locked npm
# dependencies (package-lock.json), and its `prepare` builds dist/ (tsc, and
# the proto). Then two `node --test` runs:
#  1. dist/test/*.test.js: value-mapping unit tests (and the compile-time
#     typing checks in them), the client against a real pyexecd (streams,
#     refs, named interrupts: 1000-round race, leases, callbacks, snapshots,
#     two replicas for owner routing and a drain), the `conformance` runner
#     (clients/conformance/vectors.json, or $PYEXEC_CONFORMANCE), retries
#     and TLS/mTLS/bearer against fake servers, and TLS/tokens/leases on the
#     real pyexecd with certificates made by openssl;
#  2. dist/test/package.check.js, alone because npm and tsc are heavy and
#     the stream tests measure time: `npm pack` from a fresh copy of the
#     sources, the tarball and the directory installed in scratch projects
#     in a temporary directory, and a program and the README's examples
#     compiled there with the project's own tsc and run against pyexecd.
# Every server listens on 127.0.0.1, port 0. Both runs go; the script fails
# if either failed.
#
#   clients/node/run_tests.sh
#
# PYEXECD: the pyexecd binary; default <repo>/bazel-bin/server/pyexecd
# (build: bazel build //server:pyexecd //worker:pyexec_worker).
# Needs node >= 18 and npm on PATH (scripts/install_deps.sh installs Debian's
# nodejs and npm when there is no node), the npm registry (or npm's cache)
# for npm ci and the scratch projects, tar, and openssl.
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

rm -rf dist # so that the build below is npm ci's
npm ci --no-audit --no-fund --loglevel=error
if [ ! -f dist/src/index.js ] || [ ! -f dist/proto/pyexec/v1/pyexec.proto ] || [ ! -f dist/test/client.test.js ]; then
  echo "run_tests.sh: npm ci did not build dist/ (its prepare script; is ignore-scripts set?)" >&2
  exit 1
fi

status=0
node --test dist/test/*.test.js || status=1
node --test dist/test/package.check.js || status=1
exit "$status"
