#!/usr/bin/env bash
# Installs a relocatable libtesseraq into PREFIX (default /usr/local):
#   PREFIX/lib/libtesseraq.so.X.Y.Z Swift runtime linked in (-static-stdlib); needs only libc, libm,
#                                    libstdc++, libgcc_s and libomp.so.5 (Debian libomp5); exports tq_* only
#   PREFIX/lib/libtesseraq.so.X      -> libtesseraq.so.X.Y.Z (the SONAME, what programs load)
#   PREFIX/lib/libtesseraq.so        -> libtesseraq.so.X (what -ltesseraq links against)
#   PREFIX/include/tesseraq.h
#   PREFIX/lib/pkgconfig/tesseraq.pc so an engine's build finds it with pkg-config
#   PREFIX/bin/tesseraq              the command-line tool
# Builds in its own scratch folder (.build-install) so the development build is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="$(mkdir -p "${1:-/usr/local}" && cd "${1:-/usr/local}" && pwd)"
BUILD=(swift build -c release --scratch-path .build-install -Xswiftc -static-stdlib)
# Only the two shipped products (not the benchmarks): less time and disk.
"${BUILD[@]}" --product tesseraq
"${BUILD[@]}" --product tesseraq-cli
BIN="$("${BUILD[@]}" --show-bin-path)"
VERSION="$(sed -n 's/.*static let version = "\(.*\)".*/\1/p' Sources/TesseraQ/Support/Runtime.swift)"
mkdir -p "$PREFIX/lib/pkgconfig" "$PREFIX/include" "$PREFIX/bin"
SONAME="$(readelf -d "$BIN/libtesseraq.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')"
[ "$SONAME" = "libtesseraq.so.${VERSION%%.*}" ] || { echo "error: SONAME $SONAME does not match version $VERSION" >&2; exit 1; }
install -m 755 "$BIN/libtesseraq.so" "$PREFIX/lib/libtesseraq.so.$VERSION"
ln -sfn "libtesseraq.so.$VERSION" "$PREFIX/lib/$SONAME"
ln -sfn "$SONAME" "$PREFIX/lib/libtesseraq.so"
install -m 755 "$BIN/tesseraq-cli" "$PREFIX/bin/tesseraq"
install -m 644 include/tesseraq.h "$PREFIX/include/tesseraq.h"
cat > "$PREFIX/lib/pkgconfig/tesseraq.pc" <<PC
prefix=$PREFIX
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: tesseraq
Description: Ultra-low-bit TesseraQ quantization of LLaMA-family models (C ABI)
Version: $VERSION
Libs: -L\${libdir} -ltesseraq -Wl,-rpath,\${libdir}
Cflags: -I\${includedir}
PC
echo "installed libtesseraq $VERSION into $PREFIX"
