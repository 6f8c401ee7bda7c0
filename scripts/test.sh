#!/usr/bin/env bash
# The test command (README, CI): builds, runs the Swift tests, then the Python tests against
# the freshly built libtesseraq.so. Tests that need ../shared skip loudly when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build --build-tests
swift test --skip-build
TESSERAQ_LIBRARY="$PWD/.build/debug/libtesseraq.so" python3 -m pytest -q bindings/python/tests
