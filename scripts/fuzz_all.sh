#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 20) through scripts/fuzz.sh and prints
# one line per target: executions and libFuzzer's coverage figures (cov: edges reached, ft:
# features). On a crash, hang or sanitizer report it prints the end of that target's log and fails.
# The test command's fuzzing step (20 s each on the committed corpus); longer runs measure.
#   bash scripts/fuzz_all.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-20}"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
for harness in fuzz/*.c; do
  target="$(basename "$harness" .c)"
  [ "$target" != support ] || continue
  if ! bash scripts/fuzz.sh "$target" "$SECONDS_EACH" >"$LOG" 2>&1; then
    tail -n 60 "$LOG" >&2
    echo "error: fuzz target $target failed; the input is in .build-fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs="$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$LOG")"
  coverage="$(grep -E '^#[0-9]+' "$LOG" | tail -n 1 | grep -o 'cov: [0-9]* ft: [0-9]*')"
  echo "fuzz $target: $runs executions in $SECONDS_EACH s, $coverage, no failure"
done
