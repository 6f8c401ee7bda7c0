#!/usr/bin/env bash
# The one-command demo: on a fresh machine, installs what is missing, builds the release
# library and CLI, fetches SmolLM2-135M-Instruct (scripts/convert_smollm2.py), quantizes it to
# 2 bits (group 64) with TesseraQ (preset "fast", calibrated on data/wikitext2/valid.txt) and with
# RTN, evaluates FP, RTN and TesseraQ on data/wikitext2/test.raw.txt (seq_len 2048, first
# ${WINDOWS:-4} windows), and prints a table and the wall time of every step.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
MODEL="$ROOT/models/SmolLM2-135M-Instruct"
OUT="$ROOT/out/demo"
TEST_TEXT="$ROOT/data/wikitext2/test.raw.txt"
CALIB_TEXT="$ROOT/data/wikitext2/valid.txt"
mkdir -p "$OUT"
: > "$OUT/steps.txt"

step() {  # label, then the command: runs it and records its wall time
  local label="$1"; shift
  local t0=$SECONDS
  "$@"
  printf '%-34s %6ss\n' "$label" "$(( SECONDS - t0 ))" >> "$OUT/steps.txt"
}

step "setup (libomp, Python packages)" bash scripts/setup.sh
step "build (release)" swift build -c release --product tesseraq-cli
CLI="$ROOT/.build/release/tesseraq-cli"
step "download + convert SmolLM2" python3 scripts/convert_smollm2.py --out "$MODEL"

evaluate() {  # directory: prints its perplexity
  "$CLI" eval --model "$1" --text "$TEST_TEXT" --seq-len 2048 --max-windows "${WINDOWS:-4}" --json |
    python3 -c "import json,sys; print('%.2f' % json.load(sys.stdin)['perplexity'])"
}

run() {  # name, then the quantize arguments (none for the float model)
  local name="$1"; shift
  local dir="$MODEL" secs=""
  if [ $# -gt 0 ]; then
    dir="$OUT/$name"
    local t0=$SECONDS
    [ -f "$dir/config.json" ] || step "quantize $name" "$CLI" quantize --model "$MODEL" --out "$dir" "$@"
    secs="$(( SECONDS - t0 ))s"
  fi
  local t0=$SECONDS
  local ppl
  ppl=$(evaluate "$dir")
  printf '%-34s %6ss\n' "eval $name" "$(( SECONDS - t0 ))" >> "$OUT/steps.txt"
  local size
  size=$(du -sm "$dir/model.safetensors" | cut -f1)
  printf '%-22s %10s %9s MB %9s\n' "$name" "$ppl" "$size" "$secs" >> "$OUT/table.txt"
}

: > "$OUT/table.txt"
run "FP (bf16)"
run "RTN W2 g64" --method rtn --bits 2 --group-size 64
# init=rtn keeps the demo within its time budget (the AWQ search would add about 20 s per block).
run "TesseraQ W2 g64 fast" --method tesseraq --bits 2 --group-size 64 --preset fast --set init=rtn --calib-text "$CALIB_TEXT"
echo
printf '%-22s %10s %12s %9s\n' "model" "perplexity" "size" "quantize"
cat "$OUT/table.txt"
echo
echo "wall time of each step (a step already done by an earlier run takes no time):"
cat "$OUT/steps.txt"
