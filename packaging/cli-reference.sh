#!/bin/bash
# packaging/cli-reference.sh BINARY — print docs/cli.md: the `--help` of
# credloader and of every subcommand, generated from the CLI definition
# (src/cli.rs). `make docs` writes it; tests/docs.rs fails when docs/cli.md
# differs from what this prints.
#
# clap wraps help to the terminal: with no terminal on any of stdin, stdout
# and stderr it takes COLUMNS, fixed here so the output is the same anywhere.
set -euo pipefail
bin=${1:?usage: $0 path/to/credloader}
export COLUMNS=100
# clap shows the value of an env-backed option in its help.
unset CREDLOADER_CONFIG

help() {
  "$bin" "$@" --help </dev/null 2>/dev/null | cat
}

# The subcommands, as the top-level help lists them (hidden ones are not).
commands=$(help | sed -n '/^Commands:$/,/^$/p' | sed -n 's/^  \([a-z][a-z0-9-]*\) .*/\1/p' | grep -vx help)

cat <<'HEAD'
# Command-line reference

Generated from the CLI definition (`src/cli.rs`) by `make docs`
(`packaging/cli-reference.sh`); do not edit by hand. `cargo test --test docs`
fails when this file is stale. The same text is in `credloader help COMMAND`
and `man credloader-COMMAND`; `man credloader` has the overview, examples and
files.

Global options (`--config`, `--root`, `--json`, `-v`, `-q`) work with every
command. Exit codes: [exit-codes.md](exit-codes.md).

HEAD
echo "Commands:"
echo
for c in $commands; do
  echo "- [\`credloader $c\`](#credloader-$c)"
done
echo
echo "## credloader"
echo
echo '```text'
help
echo '```'
for c in $commands; do
  echo
  echo "## credloader $c"
  echo
  echo '```text'
  help "$c"
  echo '```'
done
