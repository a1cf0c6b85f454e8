#!/usr/bin/env bash
# Writes MODDIR/vendor so that the Go module in MODDIR builds in module mode
# with no module proxy and no module cache (GOFLAGS=-mod=vendor, which Go
# also picks by itself when vendor/ exists), from the Go sources that Debian's
# golang-*-dev packages install under /usr/share/gocode/src.
#
#   clients/go/debian_vendor.sh MODDIR
#
# Which modules: every requirement of MODDIR/go.mod, plus the requirements of
# every module that go.mod replaces with a local directory (as a program using
# a checkout of this client does: `replace github.com/pyexec/pyexec/clients/go
# => ../pyexec/clients/go`), followed through further directory replacements.
# Go 1.17+ wants each of them listed in go.mod, so those missing are appended
# to it as `// indirect`, as `go mod tidy` would. A module replaced with a
# directory is vendored from that directory, every other one from
# $GOCODE_SRC/<module path> (default /usr/share/gocode/src); either way its
# go.mod must declare the path it is required as. The requirements of
# Debian's modules are not followed: only modules that these go.mod files
# list are vendored, so a go.mod that lacks a module providing an imported
# package fails the build.
#
# vendor/<module path> are symlinks to those directories, and
# vendor/modules.txt records each module at the version that go.mod requires
# (the label Go checks against go.mod) and its packages. The sources are
# Debian's, which may be another version than the label: run_tests.sh builds
# and tests against exactly these sources. Nothing is downloaded.
set -euo pipefail

die() { echo "debian_vendor.sh: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: debian_vendor.sh MODDIR"
moddir="$(cd "$1" && pwd)"
src="${GOCODE_SRC:-/usr/share/gocode/src}"
vendor="$moddir/vendor"
[ -f "$moddir/go.mod" ] || die "no go.mod in $moddir"
[ ! -e "$vendor" ] || die "$vendor already exists; remove it first"
command -v go >/dev/null || die "go not found (apt-get install golang-go)"

# modinfo GOMOD prints one line per fact of a go.mod, from `go mod edit -json`
# (which only parses the file, offline):
#   module PATH | go VERSION | require PATH VERSION |
#   replace OLDPATH OLDVERSION|- NEWPATH NEWVERSION|-
modinfo() {
  go mod edit -json "$1" | awk -F'"' '
    /^\t"Module": \{/             { sec = "module" }
    /^\t"Go": /                   { print "go", $4 }
    /^\t"Require": \[/            { sec = "require" }
    /^\t"Replace": \[/            { sec = "replace" }
    /^\t"(Exclude|Retract)": /    { sec = "" }
    sec == "module" && /^\t\t"Path": / { print "module", $4; sec = "" }
    sec == "require" && /^\t\t\t"Path": /    { p = $4 }
    sec == "require" && /^\t\t\t"Version": / { print "require", p, $4 }
    sec == "replace" && /^\t\t\t"(Old|New)": \{/ { side = $2 }
    sec == "replace" && /^\t\t\t\t"Path": /    { path[side] = $4 }
    sec == "replace" && /^\t\t\t\t"Version": / { ver[side] = $4 }
    sec == "replace" && /^\t\t\}/ {
      print "replace", path["Old"], (ver["Old"] == "" ? "-" : ver["Old"]),
            path["New"], (ver["New"] == "" ? "-" : ver["New"])
      delete path; delete ver
    }'
}

# packages DIR MODPATH prints the import path of every package of the module
# rooted at DIR: directories holding non-test .go files, minus testdata,
# vendor, _* and .* directories and nested modules (their own go.mod).
packages() {
  local dir="${1%/}"
  find "$dir/" -mindepth 1 -type d \( -name testdata -o -name vendor -o -name '[._]*' \) -prune -o \
    -type f \( -name go.mod -printf 'M%h\n' -o -name '*.go' ! -name '*_test.go' -printf 'P%h\n' \) |
  awk -v dir="$dir" -v mod="$2" '
    /^M/ { d = substr($0, 2); if (d != dir) nested[d] = 1 }
    /^P/ { pkg[substr($0, 2)] = 1 }
    END {
      for (d in pkg) {
        for (n in nested) if (d == n || index(d, n "/") == 1) next_pkg = 1
        if (!next_pkg) print mod substr(d, length(dir) + 1)
        next_pkg = 0
      }
    }' | sort
}

main_info="$(modinfo "$moddir/go.mod")"
# The main module's directory replacements, keyed "OLDPATH OLDVERSION|-":
# the directory (relative ones resolved against MODDIR, as Go does), and the
# path as go.mod spells it, which modules.txt must repeat.
declare -A replace_dir=() replace_as=()
while read -r _ old oldv new newv; do
  case "$new" in
    /*|./*|../*) ;;
    *) die "go.mod replaces $old with module $new $newv; only directory replacements can be vendored offline" ;;
  esac
  replace_as["$old $oldv"]="$new"
  [ "${new:0:1}" = / ] || new="$moddir/$new"
  [ -d "$new" ] || die "go.mod replaces $old with $new, which is not a directory"
  replace_dir["$old $oldv"]="$(cd "$new" && pwd)"
done < <(grep '^replace ' <<<"$main_info" || true)

# Module list in discovery order: the main go.mod's requirements (explicit),
# then those of directory-replaced modules.
declare -A version=() explicit=() dir_of=() replaced=()
order=()
add() { # add PATH VERSION EXPLICIT
  if [ -z "${version[$1]+x}" ]; then
    version[$1]="$2"; explicit[$1]="$3"; order+=("$1")
  fi
}
while read -r _ p v; do add "$p" "$v" 1; done < <(grep '^require ' <<<"$main_info" || true)

i=0
while [ $i -lt ${#order[@]} ]; do
  p="${order[$i]}"; v="${version[$p]}"; i=$((i + 1))
  key="$p $v"
  [ -n "${replace_dir[$key]:-}" ] || key="$p -"
  d="${replace_dir[$key]:-}"
  if [ -n "$d" ]; then
    replaced[$p]="${replace_as[$key]}"
  else
    d="$src/$p"
    [ -d "$d" ] || die "$p is not installed in $src (install its Debian golang-*-dev package)"
  fi
  [ -f "$d/go.mod" ] || die "$d has no go.mod, so it cannot provide module $p"
  info="$(modinfo "$d/go.mod")"
  declared="$(awk '$1 == "module" { print $2 }' <<<"$info")"
  [ "$declared" = "$p" ] || die "$d/go.mod declares module $declared, but it is required as $p"
  dir_of[$p]="$d"
  if [ -n "${replaced[$p]:-}" ]; then
    while read -r _ rp rv; do add "$rp" "$rv" 0; done < <(grep '^require ' <<<"$info" || true)
  fi
done

# Go (1.17 and later) wants every module that provides a package listed in
# go.mod, as `go mod tidy` would write it; add the ones only a replaced
# module's go.mod names, at the version it requires.
missing=""
for p in "${order[@]}"; do
  if [ "${explicit[$p]}" = 0 ]; then
    missing+=$'\t'"$p ${version[$p]} // indirect"$'\n'
    explicit[$p]=1
  fi
done
if [ -n "$missing" ]; then
  printf '\nrequire (\n%s)\n' "$missing" >>"$moddir/go.mod"
  go mod edit -fmt "$moddir/go.mod"
  echo "debian_vendor.sh: added to $moddir/go.mod, as go mod tidy would:" >&2
  printf '%s' "$missing" >&2
fi

mkdir -p "$vendor"
{
  for p in "${order[@]}"; do
    d="${dir_of[$p]}"
    [ ! -e "$vendor/$p" ] || die "vendor/$p overlaps another vendored module"
    mkdir -p "$(dirname "$vendor/$p")"
    ln -s "$d" "$vendor/$p"
    line="# $p ${version[$p]}"
    [ -z "${replaced[$p]:-}" ] || line+=" => ${replaced[$p]}"
    echo "$line"
    gover="$(modinfo "$d/go.mod" | awk '$1 == "go" { print $2 }')"
    meta=""
    if [ "${explicit[$p]}" = 1 ]; then meta="explicit"; fi
    if [ -n "$gover" ]; then meta="${meta:+$meta; }go $gover"; fi
    if [ -n "$meta" ]; then echo "## $meta"; fi
    packages "$d" "$p"
  done
  # Wildcard replacements (no version on the left) are recorded once more on
  # their own, as `go mod vendor` does; Go checks them against go.mod.
  for key in "${!replace_as[@]}"; do
    read -r old oldv <<<"$key"
    if [ "$oldv" = - ]; then echo "# $old => ${replace_as[$key]}"; fi
  done
} >"$vendor/modules.txt"
