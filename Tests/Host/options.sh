#!/usr/bin/env bash
# Every host shows the library's settings table: `ffmpeg -h filter=tokenflow`, `gst-inspect-1.0 tokenflow`
# and `tokenflow edit --help` are compared with tf_option of the installed libtokenflow.so (names, help,
# defaults, ranges, choices). Fails when a host hard-codes an option that drifts from the table.
set -u
cd "$(dirname "$0")/../.."
source Tests/Host/support/check.sh
library=$PWD/.build/prefix/lib/libtokenflow.so.0
work=$(mktemp -d /tmp/tokenflow-options-test.XXXXXX)
trap 'rm -rf "$work"' EXIT

compare() { # HOST HELP-FILE
    local output; output=$(python3 Tests/Host/support/option_parity.py "$library" "$1" "$2" 2>&1); local status=$?
    echo "$output"
    failures=$((failures + $(grep -c '^FAIL ' <<<"$output")))
    if [ $status -ne 0 ] && ! grep -q '^FAIL ' <<<"$output"; then fail "options $1" "parser exited $status"; fi
}

.build/ffmpeg-build/ffmpeg -hide_banner -h filter=tokenflow > "$work/ffmpeg.txt" 2>&1
compare ffmpeg "$work/ffmpeg.txt"
GST_PLUGIN_PATH=$PWD/.build/gstreamer gst-inspect-1.0 tokenflow > "$work/gstreamer.txt" 2>&1
compare gstreamer "$work/gstreamer.txt"
COLUMNS=200 .build/release/tokenflow-cli edit --help > "$work/cli.txt" 2>&1
compare cli "$work/cli.txt"
finish
