#!/usr/bin/env bash
# Installs the GStreamer element into PREFIX/lib/gstreamer-1.0/libgsttokenflow.so.
#
#   Examples/gstreamer/install.sh PREFIX        (or --prefix PREFIX; honours $DESTDIR for staged installs)
#
# The plugin is linked for its installed location: it finds libtokenflow.so through the run-time path
# '$ORIGIN/..' (that is PREFIX/lib, where scripts/install.sh puts the library). It compiles against
# PREFIX's tokenflow.pc when the library is already installed there, else against the project-local
# .build/prefix (or $TOKENFLOW_PC_DIR; and then also keeps that library directory in the run-time path).
# Then: GST_PLUGIN_PATH=PREFIX/lib/gstreamer-1.0 gst-inspect-1.0 tokenflow
# (no GST_PLUGIN_PATH is needed when PREFIX/lib/gstreamer-1.0 is GStreamer's system plugin directory).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

case "${1:-}" in
    --prefix) [ $# -eq 2 ] && prefix=$2 || prefix="" ;;
    --prefix=*) [ $# -eq 1 ] && prefix=${1#--prefix=} || prefix="" ;;
    *) [ $# -eq 1 ] && prefix=${1:-} || prefix="" ;;
esac
if [ -z "$prefix" ]; then
    echo "usage: $0 PREFIX   (or --prefix PREFIX)" >&2
    exit 2
fi
case "$prefix" in /*) ;; *) prefix="$PWD/$prefix" ;; esac

if [ -f "${DESTDIR:-}$prefix/lib/pkgconfig/tokenflow.pc" ]; then
    pc_dir="${DESTDIR:-}$prefix/lib/pkgconfig"
    rpath='$ORIGIN/..'
else
    pc_dir="${TOKENFLOW_PC_DIR:-$root/.build/prefix/lib/pkgconfig}"
    [ -f "$pc_dir/tokenflow.pc" ] || { echo "install.sh: libtokenflow is neither in $prefix nor in $pc_dir" >&2; exit 1; }
    rpath="\$ORIGIN/..:$(PKG_CONFIG_PATH=$pc_dir pkg-config --variable=libdir tokenflow)"
fi

# A separate build directory per run-time path, so the development build keeps its own.
build_dir="$root/.build/gstreamer/install-$(printf '%s' "$rpath" | cksum | cut -d' ' -f1)"
"$here/build.sh" --out "$build_dir" --pc-dir "$pc_dir" --rpath "$rpath"

dest="${DESTDIR:-}$prefix/lib/gstreamer-1.0"
mkdir -p "$dest"
install -m 644 "$build_dir/libgsttokenflow.so" "$dest/libgsttokenflow.so"
echo "install.sh: installed $dest/libgsttokenflow.so"
