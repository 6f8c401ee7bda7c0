# Sourced by the sanitizer scripts (tsan_check.sh, sanitize.sh, fuzz.sh); needs $WORK.
# soname_link BUILD_DIR: a folder holding BUILD_DIR's libtesseraq.so under its SONAME too
# (libtesseraq.so.0), so programs linked with -ltesseraq load that very build.
soname_link() {
  local lib="$1/libtesseraq.so" dir="$WORK/lib-$(basename "$(dirname "$1")")-$(basename "$1")"
  mkdir -p "$dir"
  ln -sf "$(readlink -f "$lib")" "$dir/libtesseraq.so"
  ln -sf "$(readlink -f "$lib")" "$dir/$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')"
  echo "$dir"
}
