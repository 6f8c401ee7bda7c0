#!/usr/bin/env bash
# Builds the C and C++ examples against include/tesseraq.h (gcc and clang, -std=c11 / -std=c++17,
# -Wall -Wextra -pedantic -Werror, the header found with plain -I) and runs them on stories260K:
# once against the development build (.build/debug), and once through pkg-config from an
# installed layout (scripts/install.sh into a temporary prefix: SONAME symlinks, -static-stdlib).
set -euo pipefail
cd "$(dirname "$0")/.."
STORIES="$PWD/Tests/Fixtures/models/stories260K"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
WARN=(-Wall -Wextra -pedantic -Werror -O2)
# The development library's SONAME is libtesseraq.so.0: give the loader that name for it.
SONAME="$(readelf -d .build/debug/libtesseraq.so | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')"
mkdir -p "$WORK/lib"
ln -s "$PWD/.build/debug/libtesseraq.so" "$WORK/lib/libtesseraq.so"
ln -s "$PWD/.build/debug/libtesseraq.so" "$WORK/lib/$SONAME"
LINK=(-L"$WORK/lib" -ltesseraq -Wl,-rpath,"$WORK/lib" -lm)
for cc in gcc clang; do
  for ex in quantize packed_gemv generate; do
    $cc -std=c11 "${WARN[@]}" -I include "examples/c/$ex.c" -o "$WORK/$ex-$cc" "${LINK[@]}"
  done
done
for cxx in g++ clang++; do
  $cxx -std=c++17 "${WARN[@]}" -I include examples/cpp/tesseraq.cpp -o "$WORK/cpp-$cxx" "${LINK[@]}"
done
"$WORK/quantize-gcc" "$STORIES" "$WORK/w3" '{"method": "rtn", "bits": 3, "group_size": 32}'
"$WORK/packed_gemv-clang" "$WORK/w3" | tail -n 2
"$WORK/cpp-g++" "$STORIES" "$WORK/w4"
"$WORK/cpp-clang++" "$STORIES" "$WORK/w4"
# The engine loop on a W8 checkpoint the CLI writes (groups of 32 keep stories260K's golden greedy
# path): from BOS alone ("" encodes to it), 200 greedy tokens must be the golden continuation.
.build/debug/tesseraq-cli quantize --model "$STORIES" --out "$WORK/w8" --method rtn --bits 8 --group-size 32 >/dev/null
[ -f "$WORK/w8/tokenizer.json" ] || { echo "error: the packed checkpoint lacks tokenizer.json" >&2; exit 1; }
for cc in gcc clang; do
  "$WORK/generate-$cc" "$WORK/w8" "" 200 >"$WORK/generated.txt"
  python3 -c 'import json, sys
expected = json.load(open(sys.argv[1]))["expected_text"]
got = open(sys.argv[2], encoding="utf-8").read()
if got != expected + "\n":
    sys.exit("error: generate printed %r, not the golden continuation %r" % (got[:80], expected[:80]))' \
    "$STORIES/golden.json" "$WORK/generated.txt"
done

# The installed layout, found through pkg-config. Each step says what failed: the build log is
# shown when the install fails, and ldd's output when the example links the wrong library.
if ! bash scripts/install.sh "$WORK/prefix" >"$WORK/install.log" 2>&1; then
  tail -n 60 "$WORK/install.log" >&2; df -h . "$WORK" >&2
  echo "error: scripts/install.sh failed" >&2; exit 1
fi
export PKG_CONFIG_PATH="$WORK/prefix/lib/pkgconfig"
# shellcheck disable=SC2046
gcc -std=c11 "${WARN[@]}" examples/c/packed_gemv.c -o "$WORK/packed_gemv_pc" $(pkg-config --cflags --libs tesseraq) -lm
# The check is about the binary's own RUNPATH, so an inherited LD_LIBRARY_PATH must not decide it;
# paths are compared resolved, so a symlink in TMPDIR does not matter.
LOADED="$(env -u LD_LIBRARY_PATH ldd "$WORK/packed_gemv_pc" | awk -v so="$SONAME" '$1 == so {print $3}')"
if [ -z "$LOADED" ] || [ "$(readlink -f "$LOADED")" != "$(readlink -f "$WORK/prefix/lib/libtesseraq.so")" ]; then
  env -u LD_LIBRARY_PATH ldd "$WORK/packed_gemv_pc" >&2
  echo "error: the pkg-config build does not load $WORK/prefix/lib/libtesseraq.so" >&2; exit 1
fi
if ldd "$WORK/prefix/lib/libtesseraq.so" | grep -q swiftCore; then
  echo "error: the installed libtesseraq.so still needs the Swift runtime" >&2; exit 1
fi
EXPORTED="$(nm -D --defined-only "$WORK/prefix/lib/libtesseraq.so" | awk '{print $3}' | grep -v '^tq_' || true)"
if [ -n "$EXPORTED" ]; then
  echo "error: the installed libtesseraq.so exports more than tq_*: $(echo "$EXPORTED" | head -n 5 | tr '\n' ' ')" >&2; exit 1
fi
env -u LD_LIBRARY_PATH "$WORK/packed_gemv_pc" "$WORK/w3" | tail -n 1
"$WORK/prefix/bin/tesseraq" inspect "$WORK/w3" | tail -n 2
echo "examples: 6 passed, 0 failed"
