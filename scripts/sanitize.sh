#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer. Builds the OpenMP kernels with
# -fsanitize=address,undefined -fno-sanitize-recover=all and the Swift code with -sanitize=address in
# their own scratch folder (.build-asan), runs the whole Swift test suite there, then builds the C and
# C++ examples and Tests/c/concurrency.c with the same sanitizers against that libtesseraq.so and runs
# them on stories260K (generate.c samples 64 tokens). Fails on any failed test or sanitizer report.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
STORIES="$PWD/Tests/Fixtures/models/stories260K"
SAN=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
SWIFT_FLAGS=(--scratch-path .build-asan -Xswiftc -sanitize=address)
for flag in "${SAN[@]}"; do SWIFT_FLAGS+=(-Xcc "$flag"); done
# shellcheck source=scripts/asan_options.sh
source scripts/asan_options.sh

swift build --build-tests "${SWIFT_FLAGS[@]}" 2>&1 | tail -n 1
if ! swift test --skip-build "${SWIFT_FLAGS[@]}" >"$WORK/swift-test.log" 2>&1; then
  grep -v '^◇' "$WORK/swift-test.log" | tail -n 80 >&2
  echo "error: the Swift suite failed under AddressSanitizer + UBSan" >&2; exit 1
fi
tail -n 1 "$WORK/swift-test.log"

# shellcheck source=scripts/soname_link.sh
source scripts/soname_link.sh
LIB="$(soname_link "$(swift build "${SWIFT_FLAGS[@]}" --show-bin-path)")"
LINK=(-fuse-ld=lld -I include -L"$LIB" -ltesseraq -Wl,-rpath,"$LIB" -lm -lpthread)
clang -std=c11 -g -O1 "${SAN[@]}" examples/c/quantize.c -o "$WORK/quantize" "${LINK[@]}"
clang -std=c11 -g -O1 "${SAN[@]}" examples/c/packed_gemv.c -o "$WORK/packed_gemv" "${LINK[@]}"
clang++ -std=c++17 -g -O1 "${SAN[@]}" examples/cpp/tesseraq.cpp -o "$WORK/cpp" "${LINK[@]}"
clang -std=c11 -g -O1 "${SAN[@]}" examples/c/generate.c -o "$WORK/generate" "${LINK[@]}"
clang -std=c11 -g -O1 "${SAN[@]}" Tests/c/concurrency.c -o "$WORK/concurrency" "${LINK[@]}"
"$WORK/quantize" "$STORIES" "$WORK/w3" '{"method": "rtn", "bits": 3, "group_size": 32}'
"$WORK/packed_gemv" "$WORK/w3" | tail -n 1
"$WORK/cpp" "$STORIES" "$WORK/w4" | tail -n 1
"$WORK/concurrency" "$STORIES" "$WORK/w4" | tail -n 1
"$WORK/generate" "$WORK/w4" "" 64 0.8 1 | tail -n 1
echo "AddressSanitizer + UndefinedBehaviorSanitizer: no reports"
