#!/usr/bin/env bash
# The one-command demo: on a fresh machine, installs what is missing, builds the release
# library and CLI, fetches SmolLM2-135M-Instruct (scripts/convert_smollm2.py), quantizes it to
# 2 bits (group 64) with TesseraQ (preset "fast") and with RTN, evaluates FP, RTN and TesseraQ
# on WikiText-2 (seq_len 2048, first ${WINDOWS:-4} windows), and prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SHARED="${TESSERAQ_SHARED:-$ROOT/../shared}"
MODEL="$ROOT/models/SmolLM2-135M-Instruct"
OUT="$ROOT/out/demo"
bash scripts/setup.sh
swift build -c release --product tesseraq-cli
CLI="$ROOT/.build/release/tesseraq-cli"
python3 scripts/convert_smollm2.py --out "$MODEL"
mkdir -p "$OUT"

TEST_TOKENS="$SHARED/data/wikitext2/tokens/SmolLM2-135M/test.raw.bin"
CALIB_TOKENS="$SHARED/data/wikitext2/tokens/SmolLM2-135M/valid.bin"
if [ ! -f "$TEST_TOKENS" ]; then
  # Without ../shared, tokenize WikiText-2 text given in TESSERAQ_WIKITEXT_DIR (test.raw.txt, valid.txt).
  echo "error: $TEST_TOKENS not found: set TESSERAQ_SHARED to the folder holding data/wikitext2" >&2
  exit 2
fi

run() {  # name, then the quantize arguments (none for the float model)
  local name="$1"; shift
  local dir="$MODEL" secs=0
  if [ $# -gt 0 ]; then
    dir="$OUT/$name"
    local t0=$(date +%s)
    [ -f "$dir/config.json" ] || "$CLI" quantize --model "$MODEL" --out "$dir" "$@"
    secs=$(( $(date +%s) - t0 ))
  fi
  local ppl=$("$CLI" eval --model "$dir" --tokens "$TEST_TOKENS" --seq-len 2048 --max-windows "${WINDOWS:-4}" --json |
    python3 -c "import json,sys; print('%.2f' % json.load(sys.stdin)['perplexity'])")
  local size=$(du -sm "$dir/model.safetensors" | cut -f1)
  printf '%-22s %10s %9s MB %8ss\n' "$name" "$ppl" "$size" "$secs" >> "$OUT/table.txt"
}

: > "$OUT/table.txt"
run "FP (bf16)"
run "RTN W2 g64" --method rtn --bits 2 --group-size 64
# init=rtn keeps the demo within its time budget (the AWQ search would add about 20 s per block).
run "TesseraQ W2 g64 fast" --method tesseraq --bits 2 --group-size 64 --preset fast --set init=rtn --calib-tokens "$CALIB_TOKENS"
echo
printf '%-22s %10s %12s %9s\n' "model" "perplexity" "size" "quantize"
cat "$OUT/table.txt"
