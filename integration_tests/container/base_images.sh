#!/usr/bin/env bash
# Makes the two Debian 12 base images that deploy/container/Dockerfile starts
# from, without a container registry: `mmdebstrap` bootstraps them from this
# machine's own apt sources (read from apt at run time; no mirror is named in
# the repository), and `podman import` stores them under the names the
# Dockerfile uses, so that `FROM debian:12` and `FROM debian:12-slim` resolve
# locally and nothing is pulled:
#   docker.io/library/debian:12        variant apt (essential + apt), like the registry's
#   docker.io/library/debian:12-slim   the same without man pages, docs and locales
# Elsewhere the same Dockerfile builds from the registry's images.
#
# The tarballs are cached outside the clone, in $PYEXEC_CONTAINER_CACHE
# (default ~/.cache/pyexec/container), under a key that hashes the recipe
# below (variant, packages, dpkg filters): a change of the recipe makes new
# images; anything else reuses them. An image already in podman's storage
# with the key as its label is not imported again.
#
# Usage: integration_tests/container/base_images.sh   (as root; podman, mmdebstrap)
# Environment: PODMAN (default "podman --runtime runc"), PYEXEC_CONTAINER_CACHE.
set -euo pipefail

cache="${PYEXEC_CONTAINER_CACHE:-$HOME/.cache/pyexec/container}"
read -r -a podman <<<"${PODMAN:-podman --runtime runc}"

# The recipe. Whatever changes the images' contents belongs here, since its
# hash names the cached tarballs.
suite=bookworm
variant=apt
slim_filters=(
  'path-exclude=/usr/share/man/*'
  'path-exclude=/usr/share/info/*'
  'path-exclude=/usr/share/locale/*'
  'path-include=/usr/share/locale/locale.alias'
  'path-exclude=/usr/share/doc/*'
  'path-include=/usr/share/doc/*/copyright'
  'path-exclude=/usr/share/lintian/*'
)
recipe_version=1
recipe="v=$recipe_version suite=$suite variant=$variant slim=${slim_filters[*]}"
key="$(printf '%s' "$recipe" | sha256sum | cut -c1-16)"

# This machine's Debian sources for $suite (and its -updates and -security
# suites), as one-line entries: apt already knows them, whatever file format
# or mirror they are configured with.
debian_sources() {
  apt-get indextargets \
    --format '$(IDENTIFIER) $(ORIGIN) $(CODENAME) $(REPO_URI) $(RELEASE) $(COMPONENT)' |
    awk -v suite="$suite" '$1 == "Packages" && $2 == "Debian" && index($3, suite) == 1 {
      print "deb " $4 " " $5 " " $6 }' | sort -u
}

bootstrap() {  # bootstrap NAME TARBALL [mmdebstrap options...]
  local name="$1" tarball="$2"; shift 2
  local -a mirrors=()
  local line
  while IFS= read -r line; do mirrors+=("$line"); done < <(debian_sources)
  if ((${#mirrors[@]} == 0)); then
    echo "base_images: apt knows no Debian $suite sources (run apt-get update?)" >&2
    return 1
  fi
  echo "base_images: bootstrapping $name from ${#mirrors[@]} apt sources" >&2
  local tmp="$tarball.tmp.$$"
  # The second image reuses the packages the first one downloaded ($debs).
  # /dev is the runtime's to fill; device nodes in an image only get in the way.
  mmdebstrap --quiet --variant="$variant" --format=tar --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $debs /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives $debs" \
    "$@" "$suite" - "${mirrors[@]}" |
    mmtarfilter --path-exclude='/dev/*' > "$tmp"
  mv "$tmp" "$tarball"
}

image_key() {  # the recipe key an image in podman's storage was made from, if any
  "${podman[@]}" image inspect --format '{{index .Config.Labels "pyexec.base-recipe"}}' "$1" \
    2>/dev/null || true
}

ensure() {  # ensure IMAGE NAME [mmdebstrap options...]
  local image="$1" name="$2"; shift 2
  if [[ "$(image_key "$image")" == "$key" ]]; then
    return 0
  fi
  local tarball="$cache/$name-$key.tar"
  if [[ ! -s "$tarball" ]]; then
    bootstrap "$name" "$tarball" "$@"
  fi
  "${podman[@]}" import --quiet \
    --change 'CMD ["bash"]' \
    --change "LABEL pyexec.base-recipe=$key" \
    "$tarball" "$image" >/dev/null
  echo "base_images: imported $image ($name-$key)" >&2
}

mkdir -p "$cache"
debs="$(mktemp -d -t pyexec_base_debs.XXXXXX)"
trap 'rm -rf "$debs"' EXIT
# Tarballs of earlier recipes are dead weight.
find "$cache" -maxdepth 1 -name 'debian12*.tar' ! -name "*-$key.tar" -delete

ensure docker.io/library/debian:12 debian12
slim_opts=()
for f in "${slim_filters[@]}"; do slim_opts+=("--dpkgopt=$f"); done
ensure docker.io/library/debian:12-slim debian12-slim "${slim_opts[@]}"
