#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of one parser or loader, through the C ABI:
#   bash scripts/fuzz.sh TARGET SECONDS [libFuzzer options ...]
# TARGET is a harness of fuzz/: safetensors, config_json, packed, tokenizer_json, tokenize,
# quantize_config, calib_tokens, model_options. Runs SECONDS seconds from the committed seeds
# (fuzz/corpus/TARGET) plus what earlier runs found (.build-fuzz/corpus/TARGET); fails on any
# crash, hang (-timeout), out-of-memory or sanitizer report, leaving the input in
# .build-fuzz/artifacts/TARGET/.
#
# Why C harnesses over the C ABI, not a Swift executable target with @_cdecl("LLVMFuzzerTestOneInput"):
# SwiftPM gives every executable target its own main (renamed for testing), which collides with
# libFuzzer's, and a fuzz target in Package.swift would be built, without the fuzzer runtime, by
# every `swift build`. The C ABI is also exactly what an untrusted file reaches in a user's
# program (path in, status out). So libtesseraq.so is built once, in release mode for speed, in
# .build-fuzz with coverage instrumentation and AddressSanitizer (Swift: -sanitize=fuzzer,address,
# one flag, as a second -sanitize= would replace the first: edge counters and comparison tracing;
# C kernels: -fsanitize=fuzzer-no-link,address), and each
# harness is one small C file linked with clang -fsanitize=fuzzer,address. libFuzzer collects the
# library's coverage counters as it loads (any module's instrumented code counts).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${1:?usage: fuzz.sh TARGET SECONDS [libFuzzer options]}"
SECONDS_TO_RUN="${2:?usage: fuzz.sh TARGET SECONDS [libFuzzer options]}"
shift 2
[ -f "fuzz/$TARGET.c" ] || { echo "error: no harness fuzz/$TARGET.c" >&2; exit 2; }
SCRATCH=.build-fuzz
SWIFT_FLAGS=(-c release --product tesseraq --scratch-path "$SCRATCH" -Xswiftc -sanitize=fuzzer,address
             -Xcc -fsanitize=fuzzer-no-link,address -Xcc -fno-omit-frame-pointer)
swift build "${SWIFT_FLAGS[@]}" 2>&1 | tail -n 1
WORK="$PWD/$SCRATCH/harness"
mkdir -p "$WORK" "$SCRATCH/corpus/$TARGET" "$SCRATCH/artifacts/$TARGET"
# shellcheck source=scripts/soname_link.sh
source scripts/soname_link.sh
LIB="$(soname_link "$(swift build "${SWIFT_FLAGS[@]}" --show-bin-path)")"
clang -std=c11 -g -O1 -Wall -Wextra -Werror -fuse-ld=lld -fsanitize=fuzzer,address -DTQ_REPO="\"$PWD\"" -I include \
  "fuzz/$TARGET.c" fuzz/support.c -o "$WORK/$TARGET" -L"$LIB" -ltesseraq -Wl,-rpath,"$LIB"
# shellcheck source=scripts/asan_options.sh
source scripts/asan_options.sh
# The one exception to leak checking, a false positive: the tokenize target keeps its three
# fixture tokenizers for the whole run, and LeakSanitizer cannot follow pointers that Swift stores
# with the case tag in their spare bits (multi-payload and indirect enums such as
# TextPostProcessor), so parts of those live tokenizers look unreachable. The same code's leaks
# are checked by tokenizer_json, which opens and frees a tokenizer for every input.
LEAKS=(); [ "$TARGET" != tokenize ] || LEAKS=(-detect_leaks=0)
# -timeout: no input may take 20 s (the slowest seeds take well under one); -rss_limit_mb: the
# largest legitimate input (a 1 MB model file) needs far less than 2 GB.
"$WORK/$TARGET" "$SCRATCH/corpus/$TARGET" "fuzz/corpus/$TARGET" -max_total_time="$SECONDS_TO_RUN" -timeout=20 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$SCRATCH/artifacts/$TARGET/" "${LEAKS[@]}" "$@"
