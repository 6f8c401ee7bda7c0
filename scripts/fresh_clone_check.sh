#!/usr/bin/env bash
# Proves that a fresh clone needs nothing beside it: clones this repository's HEAD into an empty
# temporary folder (so no ../shared, no models/, no build) and runs the given command there,
# by default the README's test command.
#   bash scripts/fresh_clone_check.sh [COMMAND ...]     (default: bash scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- bash scripts/test.sh
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
git clone -q --no-local "$PWD" "$WORK/libtesseraq"
cd "$WORK/libtesseraq"
if [ -e "$WORK/shared" ] || [ -e models ]; then  # nothing beside the clone, no models/
  echo "error: the clone in $WORK is not alone" >&2; exit 1
fi
echo "fresh clone of $(git rev-parse --short HEAD) in $PWD (nothing beside it): $*"
"$@"
