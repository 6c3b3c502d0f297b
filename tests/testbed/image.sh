#!/bin/bash
# image.sh — the root file system a test bed boots, per Debian release.
# See docs/testbed.md ("Other releases").
#
#   image.sh path RELEASE     print the bed's lower layer for RELEASE, building
#                             it first if it is missing or half-built
#   image.sh list             the releases this script knows
#
# RELEASE: host (this machine's own root, /), debian12 (bookworm), debian13
# (trixie), testing (Debian testing: the newest systemd Debian ships). A
# release that is the host's own (debian12 on a Debian 12 host) is the host's
# root; any other is a minimal Debian root made with debootstrap on first use
# and kept under the build output directory:
#   ${TESTBED_ROOTS:-${CARGO_TARGET_DIR:-REPO/target}/testbed-roots}/SUITE
# Building takes about 70-130 s and ~300 MB; later boots reuse it. Two callers
# never build at once (a lock per suite), and a root counts as built only once
# SUITE.ready holds this script's recipe, written last: a build that was
# killed, or one made from an older recipe, is built again. `testing` moves
# every day: its root is rebuilt when older than TESTBED_TESTING_MAX_DAYS (7).
#
# Env: TESTBED_MIRROR=URL   the Debian mirror debootstrap uses (its default
#                           otherwise); TESTBED_ROOTS=DIR  where roots are kept.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/../.." && pwd)
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

# What the suites run inside a bed, beyond a minimal Debian: systemd as PID 1
# (systemd-sysv), D-Bus (credloader's bulk decrypt and health checks go
# through systemd-run), useradd (passwd), ps/pgrep (procps), python3 (tests
# that serve or inspect something inside), util-linux (setpriv, findmnt).
PACKAGES=systemd,systemd-sysv,dbus,passwd,procps,python3,util-linux
# Bump when the recipe below changes in a way PACKAGES does not show.
RECIPE_VERSION=2

die() { echo "testbed image: $*" >&2; exit 1; }
usage() { sed -n '2,9p' "$SELF" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# Debian suite of a release name ("" for the host's own root).
suite_of() {
  case "$1" in
    host) echo "" ;;
    debian12|bookworm) echo bookworm ;;
    debian13|trixie) echo trixie ;;
    testing|forky) echo testing ;;
    *) die "unknown release '$1' (known: host debian12 debian13 testing)" ;;
  esac
}

host_codename() {
  (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true
}

roots_dir() {
  echo "${TESTBED_ROOTS:-${CARGO_TARGET_DIR:-$REPO/target}/testbed-roots}"
}

recipe() {
  echo "suite=$1 packages=$PACKAGES variant=minbase recipe=$RECIPE_VERSION"
}

# True if the root of suite $1 in $2 is complete, from this recipe, and (for
# testing) fresh enough.
is_ready() {
  local suite=$1 roots=$2 max_days=${TESTBED_TESTING_MAX_DAYS:-7}
  [ -d "$roots/$suite" ] && [ -f "$roots/$suite.ready" ] || return 1
  [ "$(cat "$roots/$suite.ready")" = "$(recipe "$suite")" ] || return 1
  if [ "$suite" = testing ] &&
     [ -n "$(find "$roots/$suite.ready" -mtime "+$max_days" 2>/dev/null)" ]; then
    return 1
  fi
}

build() {
  local suite=$1 roots=$2 new="$2/$1.new" log="$2/$1.log"
  command -v debootstrap >/dev/null ||
    die "debootstrap is missing (apt-get install debootstrap; tests/deps.sh installs it)"
  echo "testbed image: building a Debian $suite root in $roots/$suite (once; ~90 s)" >&2
  rm -f "$roots/$suite.ready"
  rm -rf "$new" "$roots/$suite"
  local started=$SECONDS
  # shellcheck disable=SC2086 # TESTBED_MIRROR is one optional word
  if ! debootstrap --variant=minbase --include="$PACKAGES" "$suite" "$new" \
       ${TESTBED_MIRROR:-} >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    rm -rf "$new"
    die "debootstrap $suite failed (full log: $log)"
  fi
  # A host installs systemd's Recommends (debootstrap does not): newer
  # systemd dlopen()s what it used to link (OpenSSL for systemd-creds,
  # libseccomp for SystemCallFilter=, libacl for credentials), and without
  # them the bed would test a systemd no host runs.
  local recommends
  recommends=$(chroot "$new" dpkg-query -W -f='${Recommends}' systemd)
  if [ -n "$recommends" ] &&
     ! chroot "$new" env DEBIAN_FRONTEND=noninteractive \
       apt-get satisfy -y -q --no-install-recommends "$recommends" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    rm -rf "$new"
    die "installing systemd's Recommends in the $suite root failed (full log: $log)"
  fi
  # Downloaded packages are not needed to boot: ~100 MB less per root.
  rm -rf "$new/var/cache/apt/archives/"*.deb "$new/var/lib/apt/lists/"*_Packages
  # Each bed gets the host's machine id (its credential.secret is bound to
  # it); an image's own would only be a trap.
  : >"$new/etc/machine-id"
  mv "$new" "$roots/$suite"
  recipe "$suite" >"$roots/$suite.ready"
  echo "testbed image: $suite ready in $((SECONDS - started)) s" >&2
}

cmd_path() {
  [ $# -eq 1 ] || usage
  local suite roots
  suite=$(suite_of "$1")
  if [ -z "$suite" ] || [ "$suite" = "$(host_codename)" ]; then
    echo /; return 0
  fi
  [ "$(id -u)" = 0 ] || die "must run as root (debootstrap)"
  roots=$(roots_dir)
  mkdir -p "$roots"
  roots=$(readlink -f "$roots")
  # One builder per suite; the others wait for it (a build takes ~90 s, a
  # slow mirror more) and then find the root ready.
  exec 9>>"$roots/$suite.lock"
  flock -w "${TESTBED_IMAGE_LOCK_TIMEOUT:-900}" 9 ||
    die "another build of the $suite root holds $roots/$suite.lock"
  is_ready "$suite" "$roots" || build "$suite" "$roots"
  exec 9>&-
  echo "$roots/$suite"
}

case "${1:-}" in
  path) shift; cmd_path "$@" ;;
  list) echo "host debian12 debian13 testing" ;;
  *) usage ;;
esac
