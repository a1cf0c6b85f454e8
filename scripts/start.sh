#!/usr/bin/env bash
# Quick start, command 1: installs what pyexec needs (Debian 12 packages),
# builds it, and runs pyexecd in the foreground with sensible defaults.
#
#   scripts/start.sh                          # 127.0.0.1:50051, 4 warm workers
#   scripts/start.sh --listen=0.0.0.0:50051 --max_workers=32
#
# Extra arguments are passed to pyexecd (see `pyexecd --help`). Ctrl-C or
# SIGTERM drains in-flight calls and stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh
bazel build //server:pyexecd //worker:pyexec_worker //clients/cpp:pyexec
exec bazel-bin/server/pyexecd "$@"
