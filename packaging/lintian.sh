#!/bin/bash
# packaging/lintian.sh DEB — lintian on the package; fails on any error or
# warning (E:/W:) it reports. Overrides live in packaging/lintian-overrides,
# each with its reason, and are installed with the package.
set -euo pipefail
deb=${1:?usage: $0 path/to/credloader.deb}
rc=0
out=$(lintian --fail-on none --info --display-info "$deb" 2>&1) || rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne 0 ]; then
  echo "lintian itself failed (exit $rc)" >&2
  exit 1
fi
if printf '%s\n' "$out" | grep -Eq '^(E|W): '; then
  echo "lintian: errors or warnings above" >&2
  exit 1
fi
echo "lintian: no errors or warnings" >&2
