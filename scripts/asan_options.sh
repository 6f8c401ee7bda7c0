# Sourced by scripts/sanitize.sh and scripts/fuzz.sh: the sanitizer runtime options. No
# suppressions: the whole Swift suite, the examples and the fuzz targets run clean without any
# (one false positive of leak checking in one fuzz target is explained in scripts/fuzz.sh).
# Leak detection stays on (ASan's default on Linux); stack traces make a UBSan report actionable.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:check_initialization_order=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
