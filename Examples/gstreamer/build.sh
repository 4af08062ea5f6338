#!/usr/bin/env bash
# Builds the GStreamer element: libgsttokenflow.so, linked against libtokenflow found through
# pkg-config (tokenflow.pc of the project-local prefix .build/prefix by default).
#
#   Examples/gstreamer/build.sh [--out DIR] [--pc-dir DIR] [--rpath PATH]
#
#   --out DIR     output directory (default .build/gstreamer)
#   --pc-dir DIR  directory holding tokenflow.pc (default .build/prefix/lib/pkgconfig); searched
#                 before $PKG_CONFIG_PATH
#   --rpath PATH  run-time search path for libtokenflow.so (default: the libdir of tokenflow.pc);
#                 '$ORIGIN/..' suits an install into <libdir>/gstreamer-1.0
#
# Use: GST_PLUGIN_PATH=.build/gstreamer gst-inspect-1.0 tokenflow
# Idempotent: does nothing when the plugin is newer than its inputs and was built the same way.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

out="$root/.build/gstreamer"
pc_dir="$root/.build/prefix/lib/pkgconfig"
rpath=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --pc-dir) pc_dir=$2; shift 2 ;;
        --rpath) rpath=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

export PKG_CONFIG_PATH="$pc_dir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
modules="gstreamer-1.0 gstreamer-base-1.0 gstreamer-video-1.0 tokenflow"
for module in $modules; do
    if ! pkg-config --exists "$module"; then
        case "$module" in
            tokenflow) echo "build.sh: tokenflow.pc not found (looked in $pc_dir and \$PKG_CONFIG_PATH);" \
                            "build and install the library first: scripts/setup.sh" >&2 ;;
            *) echo "build.sh: pkg-config module $module not found: install libgstreamer1.0-dev" \
                    "and libgstreamer-plugins-base1.0-dev" >&2 ;;
        esac
        exit 1
    fi
done

tf_libdir=$(pkg-config --variable=libdir tokenflow)
tf_includedir=$(pkg-config --variable=includedir tokenflow)
[ -n "$rpath" ] || rpath=$tf_libdir

sources=("$here/gsttokenflow.c")
target="$out/libgsttokenflow.so"
# shellcheck disable=SC2046 # pkg-config output is meant to be split into words
cmd=("${CC:-cc}" -std=gnu11 -O2 -g -fPIC -shared -fvisibility=hidden -Wall -Wextra
     -Wno-unused-parameter -Wno-missing-field-initializers -Werror=implicit-function-declaration
     $(pkg-config --cflags $modules)
     "${sources[@]}" -o "$target"
     -Wl,--as-needed $(pkg-config --libs $modules) "-Wl,-rpath,$rpath" -Wl,-z,defs)

# Up to date when the command is the same and the plugin is newer than every input.
stamp="$target.cmd"
inputs=("${sources[@]}" "$0" "$tf_includedir/tokenflow.h" "$tf_libdir/libtokenflow.so" "$pc_dir/tokenflow.pc")
if [ -f "$target" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${cmd[*]}" ]; then
    stale=0
    for input in "${inputs[@]}"; do
        if [ -e "$input" ] && [ "$input" -nt "$target" ]; then stale=1; break; fi
    done
    if [ $stale -eq 0 ]; then
        echo "build.sh: $target is up to date"
        exit 0
    fi
fi

mkdir -p "$out"
echo "build.sh: building $target"
"${cmd[@]}"
printf '%s' "${cmd[*]}" > "$stamp"
