#!/usr/bin/env bash
# The test command (README, CI): builds, runs the Swift tests, installs the Python package and
# runs its tests against the freshly built libtesseraq.so, then builds and runs the C and C++ examples,
# the concurrency checks plain and under ThreadSanitizer (scripts/tsan_check.sh), the whole Swift
# suite and the examples under AddressSanitizer + UBSan (scripts/sanitize.sh), and every fuzz
# target for 20 s on the committed corpus (scripts/fuzz_all.sh). README, Reliability: timings.
# Everything it reads is in the repository (Tests/Fixtures, data/); setup installs Open MPI too, so
# the mpirun tests run (pytest -rs prints any skip and its reason).
# Prints the wall time of each stage at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
TIMES=""
stage() {  # label, then the command
  local label="$1" t0=$SECONDS; shift
  "$@"
  TIMES+="$(printf '%-28s %5ss' "$label" "$((SECONDS - t0))")"$'\n'
}
stage "setup" bash scripts/setup.sh --mpi
stage "build (debug, tests)" swift build --build-tests
stage "Swift tests" swift test --skip-build
stage "Python package" python3 -m pip install -q ./bindings/python
stage "pytest" env TESSERAQ_LIBRARY="$PWD/.build/debug/libtesseraq.so" python3 -m pytest -q -rs bindings/python/tests
stage "C/C++ examples, install" bash scripts/examples.sh
stage "concurrency, ThreadSanitizer" bash scripts/tsan_check.sh
stage "ASan + UBSan suite, examples" bash scripts/sanitize.sh
stage "fuzz targets, 20 s each" bash scripts/fuzz_all.sh 20
printf '\nwall time per stage:\n%s' "$TIMES"
