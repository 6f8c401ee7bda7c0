#!/usr/bin/env bash
# Concurrent calls through the C ABI (Tests/c/concurrency.c: shared model, packed checkpoint and
# tokenizer; per-thread tq_last_error; tq_set_num_threads while kernels run; a free racing with
# calls), run once against the debug build and once under ThreadSanitizer: libtesseraq built with
# -sanitize=thread (Swift) and -fsanitize=thread (C kernels) in .build-tsan, with no suppressions.
# Fails on any failed check or any report.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
STORIES="$PWD/Tests/Fixtures/models/stories260K"
.build/debug/tesseraq-cli quantize --model "$STORIES" --out "$WORK/w4" --bits 4 --group-size 32 >/dev/null
# shellcheck source=scripts/soname_link.sh
source scripts/soname_link.sh

# 1. Plain build: the checks themselves.
LIB="$(soname_link .build/debug)"
clang -std=c11 -Wall -Wextra -pedantic -Werror -O1 -g -I include Tests/c/concurrency.c -o "$WORK/concurrency" \
  -L"$LIB" -ltesseraq -Wl,-rpath,"$LIB" -lpthread
"$WORK/concurrency" "$STORIES" "$WORK/w4"

# 2. The same under ThreadSanitizer.
swift build --product tesseraq --scratch-path .build-tsan -Xswiftc -sanitize=thread -Xcc -fsanitize=thread \
  -Xcc -fno-omit-frame-pointer 2>&1 | tail -n 1
TSAN_LIB="$(soname_link "$(swift build --product tesseraq --scratch-path .build-tsan --show-bin-path)")"
# The toolchain's TSan runtime intercepts libdispatch too, so the program links it (and its blocks runtime).
SWIFT_LIBS="$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")/lib/swift/linux"
clang -std=c11 -fsanitize=thread -g -O1 -I include Tests/c/concurrency.c -o "$WORK/concurrency-tsan" \
  -L"$TSAN_LIB" -ltesseraq -Wl,-rpath,"$TSAN_LIB" -L"$SWIFT_LIBS" -ldispatch -lBlocksRuntime -Wl,-rpath,"$SWIFT_LIBS" -lpthread
# libomp's barriers are invisible to TSan; LLVM's Archer (an OMPT tool shipped with libomp-dev)
# tells it about them, so OpenMP regions are checked instead of reported wholesale.
ARCHER="$(dirname "$(readlink -f /usr/lib/x86_64-linux-gnu/libomp.so.5)")/libarcher.so"
[ -f "$ARCHER" ] || ARCHER=/usr/lib/llvm-14/lib/libarcher.so
# ignore_noninstrumented_modules: what Archer asks for (libomp and the Swift runtime are not instrumented).
OMP_TOOL_LIBRARIES="$ARCHER" \
  TSAN_OPTIONS="halt_on_error=1 exitcode=66 ignore_noninstrumented_modules=1" \
  "$WORK/concurrency-tsan" "$STORIES" "$WORK/w4"
echo "ThreadSanitizer: no reports"
