#!/usr/bin/env bash
# Installs the Debian 12 packages pyexec builds and tests against. Idempotent:
# it only calls apt-get when a package is missing, so repeated runs are fast.
set -euo pipefail

PACKAGES=(
  # build
  bazel-bootstrap g++ protobuf-compiler protobuf-compiler-grpc
  libgrpc++-dev libprotobuf-dev libabsl-dev python3-dev grpc-proto
  libseccomp-dev
  # tests and bench
  libgtest-dev libgmock-dev libbenchmark-dev python3-grpcio python3-protobuf
  procps
  # Python client (TLS test certificates, type check), C++ CLI (line editing), C++ conformance (JSON)
  openssl libedit-dev nlohmann-json3-dev mypy
  # Python client packaging check (pip install into a venv, offline)
  python3-venv python3-setuptools python3-wheel python3-cloudpickle
  # scale-out: /metrics server; balancer, manifest and metrics checks
  libcivetweb-dev nginx-light haproxy prometheus python3-yaml util-linux
  # fuzzing, sanitizers and -Wthread-safety (clang-14 and its compiler-rt)
  clang-14 libclang-rt-14-dev
  # Erlang client
  erlang-nox erlang-dev rebar3 erlang-common-test erlang-eunit erlang-proper git
  # Go client (grpc-go needs golang/protobuf 1.5, not Debian's default 1.3)
  golang-go golang-google-grpc-dev golang-google-protobuf-dev
  golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc
  # container suite: base images bootstrapped from apt's sources (mmdebstrap),
  # the image built and run by rootful podman with runc (crun refuses a mixed
  # cgroup v1 set-up) on the host's network, a network namespace of the
  # test's own for the README's `podman run` block (ip netns)
  podman runc mmdebstrap iproute2 containernetworking-plugins
)

# Node client: Debian's nodejs and npm, only when no node is on PATH (a newer
# node that is already installed is used as it is).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

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

# `kubectl kustomize` renders deploy/kubernetes for the scale-out and
# container tests. Any kubectl will do, Debian's kubernetes-client (1.20)
# included: the manifests render the same with it as with current ones, and
# the manifest tests check both (unpacking Debian's into ~/.cache/pyexec when
# the kubectl on PATH is another).
if ! command -v kubectl >/dev/null 2>&1; then
  echo "install_deps: installing kubernetes-client (kubectl)" >&2
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends kubernetes-client >&2
fi

# The unprivileged user workers run as when pyexecd runs as root
# (--worker_user); a dedicated one, so that RLIMIT_NPROC counts only workers.
if [[ $(id -u) -eq 0 ]] && ! getent passwd pyexec-worker >/dev/null; then
  useradd --system --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin pyexec-worker
fi
