#!/bin/bash
# packaging/build-deb.sh — build the credloader .deb (what `make deb` runs).
#
# Installs what it needs first (packaging/deps.sh: only what is missing),
# builds the release binary, generates the man pages and the bash/zsh/fish
# completions from it into target/debian-extra/ (never committed), and lets
# cargo-deb assemble the package from [package.metadata.deb] in Cargo.toml.
# Prints the path of the .deb as the last line on stdout; everything else
# goes to stderr. With --lintian, also runs packaging/lintian.sh on it.
# Arguments after `--` go to `cargo build --release` (e.g. `-- --features aws`,
# as `make deb` passes the Makefile's FEATURES): the package ships the same
# binary that `make release` builds, and the two never rebuild each other.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
CARGO=${CARGO:-cargo}
export CARGO

lintian=false
build_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --lintian) lintian=true ;;
    --) shift; build_args=("$@"); break ;;
    *) echo "usage: $0 [--lintian] [-- CARGO-BUILD-ARGS...]" >&2; exit 2 ;;
  esac
  shift
done

packaging/deps.sh

"$CARGO" build --release ${build_args[@]+"${build_args[@]}"} >&2
target=$("$CARGO" metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target/release/credloader"

# Generated from the CLI definition at build time. cargo-deb takes these
# paths from Cargo.toml, so they are fixed under the repository's target/.
extra="$repo/target/debian-extra"
rm -rf "$extra"
mkdir -p "$extra"
# credloader.1 and one credloader-COMMAND.1 per command it points to.
mkdir -p "$extra/man"
"$bin" man --out-dir "$extra/man" >/dev/null
# Registration scripts: at each TAB they ask credloader for the names
# (`COMPLETE=SHELL credloader -- WORDS`, src/complete.rs).
"$bin" completions bash >"$extra/credloader.bash"
"$bin" completions zsh >"$extra/_credloader"
"$bin" completions fish >"$extra/credloader.fish"

# Reproducible timestamps inside the package: the last commit's.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

mkdir -p "$target/debian"
deb=$("$CARGO" deb --no-build --output "$target/debian/" | tail -n 1)
[ -f "$deb" ] || { echo "build-deb.sh: cargo deb did not report a package (got: $deb)" >&2; exit 1; }

if $lintian; then
  packaging/lintian.sh "$deb" >&2
fi
echo "$deb"
