#!/usr/bin/env bash
# Builds the C examples with gcc -std=c11 -Wall -Wextra -Werror against include/tesseraq.h and
# runs them on stories260K: once against the development build (.build/debug), and once through
# pkg-config from an installed layout (scripts/install.sh into a temporary prefix).
set -euo pipefail
cd "$(dirname "$0")/.."
STORIES="$PWD/Tests/Fixtures/models/stories260K"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
CFLAGS=(-std=c11 -Wall -Wextra -Werror -O2)
for ex in quantize packed_gemv; do
  gcc "${CFLAGS[@]}" -isystem include "examples/c/$ex.c" -o "$WORK/$ex" -L.build/debug -ltesseraq \
      -Wl,-rpath,"$PWD/.build/debug" -lm
done
"$WORK/quantize" "$STORIES" "$WORK/w3" '{"method": "rtn", "bits": 3, "group_size": 32}'
"$WORK/packed_gemv" "$WORK/w3" | tail -n 2

# The installed layout, found through pkg-config. Each step says what failed: the build log is
# shown when the install fails, and ldd's output when the example links the wrong library.
if ! bash scripts/install.sh "$WORK/prefix" >"$WORK/install.log" 2>&1; then
  tail -n 60 "$WORK/install.log" >&2; df -h . "$WORK" >&2
  echo "error: scripts/install.sh failed" >&2; exit 1
fi
export PKG_CONFIG_PATH="$WORK/prefix/lib/pkgconfig"
# shellcheck disable=SC2046
gcc "${CFLAGS[@]}" examples/c/packed_gemv.c -o "$WORK/packed_gemv_pc" $(pkg-config --cflags --libs tesseraq) -lm
# The check is about the binary's own RUNPATH, so an inherited LD_LIBRARY_PATH must not decide it;
# paths are compared resolved, so a symlink in TMPDIR does not matter.
LOADED="$(env -u LD_LIBRARY_PATH ldd "$WORK/packed_gemv_pc" | awk '$1 == "libtesseraq.so" {print $3}')"
if [ -z "$LOADED" ] || [ "$(readlink -f "$LOADED")" != "$(readlink -f "$WORK/prefix/lib/libtesseraq.so")" ]; then
  env -u LD_LIBRARY_PATH ldd "$WORK/packed_gemv_pc" >&2
  echo "error: the pkg-config build does not load $WORK/prefix/lib/libtesseraq.so" >&2; exit 1
fi
if ldd "$WORK/prefix/lib/libtesseraq.so" | grep -q swiftCore; then
  echo "error: the installed libtesseraq.so still needs the Swift runtime" >&2; exit 1
fi
env -u LD_LIBRARY_PATH "$WORK/packed_gemv_pc" "$WORK/w3" | tail -n 1
"$WORK/prefix/bin/tesseraq" inspect "$WORK/w3" | tail -n 2
echo "examples: 3 passed, 0 failed"
