#!/usr/bin/env bash
# Installs the C library from the release build:
#   PREFIX/include/tokenflow.h
#   PREFIX/lib/libtokenflow.so.0          (the library; its soname)
#   PREFIX/lib/libtokenflow.so -> libtokenflow.so.0   (for -ltokenflow)
#   PREFIX/lib/pkgconfig/tokenflow.pc
#   PREFIX/bin/tokenflow                  (the command-line tool, when built)
#   PREFIX/lib/gstreamer-1.0/libgsttokenflow.so   (the GStreamer element, when built)
# Models go to PREFIX/share/tokenflow/model with `tokenflow install-model DIR`.
# Usage: scripts/install.sh [--prefix DIR]   (default /usr/local). Idempotent; build first with
# `swift build -c release` (scripts/setup.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || { echo "install: --prefix needs a directory" >&2; exit 2; }; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        *) echo "usage: scripts/install.sh [--prefix DIR]" >&2; exit 2 ;;
    esac
done

library=.build/release/libtokenflow.so
[ -f "$library" ] || { echo "install: $library is missing; run: swift build -c release --product tokenflow" >&2; exit 1; }
prefix=$(realpath -m "$prefix") # the .pc file needs an absolute prefix
version=$(awk '$2 ~ /^TOKENFLOW_VERSION_(MAJOR|MINOR|PATCH)$/ { v = v (v == "" ? "" : ".") $3 } END { print v }' Include/tokenflow.h)

install -d "$prefix/include" "$prefix/lib/pkgconfig"
install -m 644 Include/tokenflow.h "$prefix/include/tokenflow.h"
# Without DWARF (the symbol table stays, for backtraces and profilers): Debian 12's valgrind cannot read
# the toolchain's DWARF 5. Written beside the target and renamed over it, so running programs keep theirs.
strip --strip-debug -o "$prefix/lib/.libtokenflow.so.0.new" "$library"
chmod 755 "$prefix/lib/.libtokenflow.so.0.new"
mv -f "$prefix/lib/.libtokenflow.so.0.new" "$prefix/lib/libtokenflow.so.0"
ln -sfn libtokenflow.so.0 "$prefix/lib/libtokenflow.so"
cat > "$prefix/lib/pkgconfig/tokenflow.pc" <<PC
prefix=$prefix
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include

Name: tokenflow
Description: Text-driven, temporally consistent video editing with Stable Diffusion (TokenFlow), on the CPU
Version: $version
Libs: -L\${libdir} -ltokenflow
Cflags: -I\${includedir}
PC

if [ -f .build/release/tokenflow-cli ]; then
    install -d "$prefix/bin"
    install -m 755 .build/release/tokenflow-cli "$prefix/bin/.tokenflow.new"
    mv -f "$prefix/bin/.tokenflow.new" "$prefix/bin/tokenflow"
fi
if [ -f .build/gstreamer/libgsttokenflow.so ]; then
    Examples/gstreamer/install.sh "$prefix"
fi

# A system library directory needs the loader cache refreshed to find libtokenflow.so.0.
if [ "$(id -u)" -eq 0 ] && grep -rqsx "$prefix/lib" /etc/ld.so.conf /etc/ld.so.conf.d/; then
    ldconfig
fi
echo "install: libtokenflow $version in $prefix"
