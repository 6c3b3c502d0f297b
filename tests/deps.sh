#!/bin/bash
# deps.sh — install what building and testing credloader needs on a fresh
# Debian 12 machine (run as root). Installs only what is missing.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: run as root: the tests boot a real systemd in throwaway namespaces" >&2
    exit 1
  fi
}

# command -> Debian package that provides it
declare -A PKG=(
  [systemd-creds]=systemd
  [systemd-analyze]=systemd
  [unshare]=util-linux
  [nsenter]=util-linux
  [setpriv]=util-linux
  [pivot_root]=util-linux
  [script]=bsdutils
  [useradd]=passwd
  [mount]=mount
  [cc]=gcc
  # The Debian 13 (and testing) roots the e2e suites also boot
  # (tests/testbed/image.sh, built once under target/testbed-roots/).
  [debootstrap]=debootstrap
  [flock]=util-linux
)

missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG[$cmd]}")
done
[ -x /lib/systemd/systemd ] || missing+=(systemd)

if [ ${#missing[@]} -gt 0 ]; then
  need_root
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "deps.sh: installing ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi

# The sync tests run moto (a local AWS API server) from a venv that
# tests/moto.sh creates: python3 with the venv module and ensurepip (on
# Debian, the python3-venv package).
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need_root
  echo "deps.sh: installing python3 python3-venv (for moto, tests/moto.sh)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3 python3-venv
fi

# The EIO test (tests/hardening_eio.rs) serves the creds dir through a tiny
# FUSE filesystem (tests/eio/eiofs.py) with Debian's python3 and fusepy.
if ! /usr/bin/python3 -c 'import fusepy' >/dev/null 2>&1; then
  need_root
  echo "deps.sh: installing python3-fusepy (for the EIO test)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-fusepy
fi

# tests/e2e_guide_deb.rs runs the guide's `apt install ./credloader_*.deb`
# in a bed made from this host's root, which has no network: the package's
# Recommends (Cargo.toml, [package.metadata.deb]) must already be here, or apt
# would try to fetch them and fail.
recommends=()
for p in dbus ca-certificates python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    recommends+=("$p")
done
if [ ${#recommends[@]} -gt 0 ]; then
  need_root
  echo "deps.sh: installing ${recommends[*]} (the .deb's Recommends, for e2e_guide_deb)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${recommends[@]}"
fi

command -v cargo >/dev/null 2>&1 || {
  echo "deps.sh: cargo is missing; install a Rust toolchain (rustup) first" >&2
  exit 1
}

# The bounded fuzz run of `make test` (fuzz/README.md) uses cargo-fuzz; on a
# stable toolchain it runs with RUSTC_BOOTSTRAP=1. About a minute to install.
command -v cargo-fuzz >/dev/null 2>&1 || {
  echo "deps.sh: installing cargo-fuzz (for the bounded fuzz run)"
  cargo install --locked cargo-fuzz
}
