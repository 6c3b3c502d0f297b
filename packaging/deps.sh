#!/bin/bash
# packaging/deps.sh — install what building and checking the .deb needs,
# only what is missing: cargo-deb (crates.io, ~75 s to build once per
# machine), lintian and dpkg-dev (Debian). Run as root on Debian 12.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0

missing=()
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
command -v dpkg-shlibdeps >/dev/null 2>&1 || missing+=(dpkg-dev)
command -v man >/dev/null 2>&1 || missing+=(man-db)   # lintian checks the man page with it
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "packaging/deps.sh: ${missing[*]} missing; run as root to install them" >&2
    exit 1
  fi
  echo "packaging/deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# `cargo deb` finds it in ~/.cargo/bin even when that is not on PATH.
cargo_deb_ok() {
  ${CARGO:-cargo} deb --version 2>/dev/null | grep -qx "cargo-deb ${CARGO_DEB_VERSION//./\\.}"
}
if ! cargo_deb_ok; then
  echo "packaging/deps.sh: installing cargo-deb $CARGO_DEB_VERSION (once per machine)" >&2
  ${CARGO:-cargo} install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION" >&2
fi
