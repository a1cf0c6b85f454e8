#!/usr/bin/env bash
# Builds deploy/container/Dockerfile with podman and runs the image as the
# Kubernetes manifests run it, then runs Python test modules against it.
#
#   integration_tests/container/run_container_tests.sh [unittest args]
#   (default: test_isolation, when it exists, container.test_container_mtls,
#   container.test_container_rolling and
#   container.test_container_smoke)
#
# 1. base_images.sh: the Debian 12 base images, bootstrapped from this
#    machine's apt sources and cached in ~/.cache/pyexec/container.
# 2. podman build, the build stage with the host's Bazel disk cache
#    (~/.cache/pyexec/bazel-disk) mounted where the repository's .bazelrc
#    points, so that it reuses the actions that earlier image builds ran
#    (and the host's own builds, where their action environment is the
#    same). Nothing is pulled (--pull=never); --network=host lets apt reach
#    the mirror without iptables. podman's layer cache keeps the stages of
#    the last sources built; older ones are pruned.
# 3. podman_target.py start: the Secret pyexec-auth laid out as the kubelet
#    lays it out (tokens of alice and bob, a peer secret), the emptyDir, and
#    the container under the Deployment's securityContext translated to
#    podman flags; it waits for the readiness probe's service to be SERVING.
# 4. run_python_tests.sh with PYEXEC_TEST_TARGET=container and the
#    container's address, tokens, secret paths, name and private-directory
#    root in the environment (podman_target.py documents them).
# The container is stopped (SIGTERM, as the kubelet) and removed at the end
# whatever happens, and the whole run is bounded in time.
#
# Needs root, podman, runc, mmdebstrap and kubectl; $PYEXECD as
# run_python_tests.sh wants it. Environment: PYEXEC_CONTAINER_CACHE,
# PYEXEC_BAZEL_DISK_CACHE, PODMAN (default "podman --runtime runc": crun
# refuses this machine's cgroup set-up).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python=/usr/bin/python3
export PODMAN="${PODMAN:-podman --runtime runc}"
read -r -a podman <<<"$PODMAN"
disk_cache="${PYEXEC_BAZEL_DISK_CACHE:-$HOME/.cache/pyexec/bazel-disk}"
image=localhost/pyexec:container-test
name="pyexec-container-test-$$"

if (($#)); then
  suites=("$@")
else
  suites=()
  if [[ -f "$repo/integration_tests/test_isolation.py" ]]; then
    suites+=(test_isolation)
  else
    echo "run_container_tests: integration_tests/test_isolation.py not found; smoke test only" >&2
  fi
  # Last: it restarts the container, which moves the private-directory root.
  suites+=(container.test_container_mtls container.test_container_rolling container.test_container_smoke)
fi

work="$(mktemp -d -t pyexec_container.XXXXXX)"
cleanup() {
  local rc=$?
  if [[ -f "$work/$name.json" ]]; then
    "$python" "$here/podman_target.py" stop --state "$work/$name.json" || true
  fi
  "${podman[@]}" rm --force --time=0 "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

step() { echo "--- $1 ($((SECONDS - start_s))s)"; }
start_s=$SECONDS

step "base images"
timeout 900 "$here/base_images.sh"

step "image build"
mkdir -p "$disk_cache"
build=("${podman[@]}" build --runtime=runc --pull=never --network=host
       --volume "$disk_cache:/root/.cache/pyexec/bazel-disk"
       --file "$repo/deploy/container/Dockerfile")
# The build stage gets a tag of its own, so that the prune below keeps it
# (podman's layer cache) while the stages of earlier sources go.
timeout 1800 "${build[@]}" --target=build --tag "$image-build" "$repo" > "$work/build.log" 2>&1 &&
  timeout 600 "${build[@]}" --tag "$image" "$repo" >> "$work/build.log" 2>&1 ||
  { tail -n 60 "$work/build.log"; exit 1; }
grep -E '^INFO: [0-9]+ processes' "$work/build.log" || echo "(the Bazel layer came from podman's cache)"
# Images made from our base images that nothing tags any more.
"${podman[@]}" image prune --force --filter label=pyexec.base-recipe >/dev/null

step "container start"
timeout 180 "$python" "$here/podman_target.py" start \
  --image "$image" --name "$name" --workdir "$work" > "$work/env.sh"
# shellcheck source=/dev/null
source "$work/env.sh"
"${podman[@]}" inspect --format 'running {{.Name}} as {{.Config.User}} (groups {{.HostConfig.GroupAdd}}), read-only root {{.HostConfig.ReadonlyRootfs}}, caps dropped {{.HostConfig.CapDrop}}, security-opt {{.HostConfig.SecurityOpt}}' "$name"
grep -o 'isolation: .*' < <("${podman[@]}" logs "$name" 2>&1) || true

step "tests: ${suites[*]}"
"$repo/integration_tests/run_python_tests.sh" "${suites[@]}"
step "done"
