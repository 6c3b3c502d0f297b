#!/bin/bash
# moto.sh — a real AWS-API server on loopback for the `sync` tests.
#
#   tests/moto.sh install        create target/moto-venv and pip-install moto[server] (once)
#   tests/moto.sh bin            print the moto_server path (installing first if needed)
#
# The venv lives under the repository's target/ so it is cached between runs
# and visible at the same path inside the real-systemd test bed (whose root is
# an overlay of the host's /). Failures are loud: the tests never skip.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Always the repository's target/ (not $CARGO_TARGET_DIR): one cached venv.
target="$here/target"
venv="${MOTO_VENV:-$target/moto-venv}"
stamp="$venv/.credloader-moto-ok"
# The version the tests were written against; newer 5.x also work.
spec="${MOTO_SPEC:-moto[server]>=5,<6}"

install() {
  if [ -f "$stamp" ] && [ -x "$venv/bin/moto_server" ]; then
    return 0
  fi
  mkdir -p "$target"
  # Two test binaries may race to install: one installs, the other waits.
  exec 9>"$target/.moto-venv.lock"
  flock 9
  if [ -f "$stamp" ] && [ -x "$venv/bin/moto_server" ]; then
    return 0
  fi
  local py
  py="$(command -v python3 || true)"
  if [ -z "$py" ]; then
    echo "moto.sh: python3 is missing (tests/deps.sh installs it)" >&2
    exit 1
  fi
  rm -rf "$venv"
  if ! "$py" -m venv "$venv" >&2; then
    echo "moto.sh: '$py -m venv' failed; on Debian install python3-venv (tests/deps.sh does)" >&2
    exit 1
  fi
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$spec" >&2; then
    echo "moto.sh: pip install '$spec' failed (needs PyPI)" >&2
    exit 1
  fi
  "$venv/bin/moto_server" --help >/dev/null
  touch "$stamp"
}

case "${1:-}" in
  install) install ;;
  bin) install; echo "$venv/bin/moto_server" ;;
  *) echo "usage: $0 install|bin" >&2; exit 2 ;;
esac
