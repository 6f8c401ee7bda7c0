#!/usr/bin/env bash
# The test command (README, CI): builds, runs the Swift tests, installs the Python package and
# runs its tests against the freshly built libtesseraq.so, then builds and runs the C and C++ examples,
# the concurrency checks plain and under ThreadSanitizer (scripts/tsan_check.sh), the whole Swift
# suite and the examples under AddressSanitizer + UBSan (scripts/sanitize.sh), and every fuzz
# target for 20 s on the committed corpus (scripts/fuzz_all.sh). README, Reliability: timings.
# Everything it reads is in the repository (Tests/Fixtures, data/): nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build --build-tests
swift test --skip-build
python3 -m pip install -q ./bindings/python
TESSERAQ_LIBRARY="$PWD/.build/debug/libtesseraq.so" python3 -m pytest -q bindings/python/tests
bash scripts/examples.sh
bash scripts/tsan_check.sh
bash scripts/sanitize.sh
bash scripts/fuzz_all.sh 20
