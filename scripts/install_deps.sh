#!/usr/bin/env bash
# Installs the Debian 12 packages pyexec builds and tests against. Idempotent:
# it only calls apt-get when a package is missing, so repeated runs are fast.
set -euo pipefail

PACKAGES=(
  # build
  bazel-bootstrap g++ protobuf-compiler protobuf-compiler-grpc
  libgrpc++-dev libprotobuf-dev libabsl-dev python3-dev grpc-proto
  # tests and bench
  libgtest-dev libgmock-dev libbenchmark-dev python3-grpcio python3-protobuf
  procps
  # Python client (TLS test certificates, type check), C++ CLI (line editing), C++ conformance (JSON)
  openssl libedit-dev nlohmann-json3-dev mypy
  # Erlang client
  erlang-nox erlang-dev rebar3 erlang-common-test erlang-eunit erlang-proper
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  echo "install_deps: installing ${missing[*]}" >&2
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
