#!/usr/bin/env bash
# Host tests of the GStreamer element "tokenflow" (Examples/gstreamer): builds the plugin (a no-op when
# up to date) and the C test programs, then checks gst-inspect-1.0 (caps, licence; the properties against
# the library's table are Tests/Host/options.sh's), gst-launch-1.0 pipelines
# (windows, timestamps, bytes identical to the C API's streamed the same way, streams longer than the
# latent memory budget, errors), the install script, and the GstHarness unit tests
# (Tests/Host/c/gst_harness_test.c). Prints PASS/FAIL lines; exits non-zero on a failure.
# Needs the library installed in .build/prefix (scripts/setup.sh); $TOKENFLOW_PC_DIR overrides where
# tokenflow.pc is looked for.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
model=$root/Tests/Fixtures/models/sd2-tiny
pc_dir=${TOKENFLOW_PC_DIR:-$root/.build/prefix/lib/pkgconfig}
plugin_dir=$root/.build/gstreamer
work=$plugin_dir/tests
mkdir -p "$work"
export PKG_CONFIG_PATH="$pc_dir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export GST_PLUGIN_PATH=$plugin_dir
export GST_REGISTRY=$work/registry.bin      # private registry: no stale cache, no writes to $HOME
unset TOKENFLOW_MODEL
failed=0
pass() { echo "PASS $1"; }
crashed() { [ "$1" -gt 128 ] && [ "$1" -le 192 ]; }   # killed by a signal (gst-launch exits 255 on errors)
fail() { echo "FAIL $1${2:+: $2}"; failed=1; }

# Tiny model, tiny settings: every edit below takes seconds.
settings=(model="$model" steps=2 inversion-steps=2 size=input "prompt=a watercolor painting")

# --- build -----------------------------------------------------------------------------------------
if ! out=$(Examples/gstreamer/build.sh --pc-dir "$pc_dir" 2>&1); then
    echo "$out"; fail gst-build; exit 1
fi
pass gst-build
cflags=(-std=gnu11 -O1 -g -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers)
tf_libdir=$(pkg-config --variable=libdir tokenflow)
# shellcheck disable=SC2046
if ! out=$(cc "${cflags[@]}" Tests/Host/c/gst_harness_test.c -o "$work/gst_harness_test" \
        $(pkg-config --cflags --libs gstreamer-check-1.0 gstreamer-video-1.0 tokenflow) \
        "-Wl,-rpath,$tf_libdir" 2>&1) \
   || ! out=$(cc "${cflags[@]}" Tests/Host/c/gst_capi_reference.c -o "$work/gst_capi_reference" \
        $(pkg-config --cflags --libs tokenflow) "-Wl,-rpath,$tf_libdir" 2>&1); then
    echo "$out"; fail gst-test-programs; exit 1
fi

# --- gst-inspect (its properties against the library's table: Tests/Host/options.sh) ---------------
inspect=$(gst-inspect-1.0 tokenflow 2>&1)
if grep -q 'format: RGB' <<<"$inspect" && grep -Eq '^  License +MIT' <<<"$inspect"; then
    pass gst-inspect-caps-license
else
    echo "$inspect" | head -40; fail gst-inspect-caps-license
fi

# --- gst-launch: 20 frames, window 8 -------------------------------------------------------------
source_caps="video/x-raw,width=64,height=48,framerate=10/1"
gst-launch-1.0 --no-fault -q videotestsrc num-buffers=20 ! "$source_caps" ! videoconvert ! video/x-raw,format=RGB \
    ! filesink location="$work/in.rgb" >"$work/in.log" 2>&1 || fail gst-launch-input "$(cat "$work/in.log")"
start=$(date +%s.%N)
gst-launch-1.0 --no-fault -e -v videotestsrc num-buffers=20 ! "$source_caps" ! videoconvert \
    ! video/x-raw,format=RGB ! identity name=before silent=false \
    ! tokenflow "${settings[@]}" window=8 \
    ! identity name=after silent=false ! filesink location="$work/out.rgb" >"$work/launch.log" 2>&1
status=$?
seconds=$(echo "$(date +%s.%N) - $start" | bc)
# identity's last-message: "chain ... (after:sink) (9216 bytes, dts: ..., pts: 0:00:00.100000000, duration: ..."
timestamps() { grep -o "($1:sink) ([0-9]* bytes, dts: [^,]*, pts: [^,]*, duration: [^,]*" "$work/launch.log" \
    | sed 's/.*pts: \([^,]*\), duration: \(.*\)/\1 \2/'; }
before=$(timestamps before); after=$(timestamps after)
frames_out=$(grep -c . <<<"$after")
size_out=$(stat -c %s "$work/out.rgb" 2>/dev/null || echo 0)
if [ $status -eq 0 ] && [ "$frames_out" -eq 20 ] && [ "$size_out" -eq $((20 * 64 * 48 * 3)) ]; then
    pass "gst-launch-20-frames-window-8 (${seconds%???????} s)"
else
    tail -20 "$work/launch.log"; fail gst-launch-20-frames-window-8 "exit $status, $frames_out buffers, $size_out bytes"
fi
if [ -n "$after" ] && [ "$before" = "$after" ] && [ "$(head -1 <<<"$after")" = "0:00:00.000000000 0:00:00.100000000" ] \
        && [ "$(tail -1 <<<"$after")" = "0:00:01.900000000 0:00:00.100000000" ]; then
    pass gst-launch-pts-duration-preserved
else
    diff <(echo "$before") <(echo "$after") | head; fail gst-launch-pts-duration-preserved
fi
# Output comes after whole windows: the 8th input precedes the 1st output, the 9th follows the 8th output.
order=$(grep -o "(\(before\|after\):sink) ([0-9]* bytes, dts: [^,]*, pts: [^,]*" "$work/launch.log" \
    | sed 's/(\([a-z]*\):sink).*pts: \(.*\)/\1 \2/' | tr '\n' ';')
if [[ "$order" == *"before 0:00:00.700000000;after 0:00:00.000000000;"* ]] \
        && [[ "$order" == *"after 0:00:00.700000000;before 0:00:00.800000000;"* ]] \
        && [[ "$order" == *"before 0:00:01.900000000;after 0:00:01.600000000;"* ]]; then
    pass gst-launch-windows-of-8-8-4
else
    echo "$order" | tr ';' '\n' | head -40; fail gst-launch-windows-of-8-8-4
fi
if [ -s "$work/in.rgb" ] && [ -s "$work/out.rgb" ] && ! cmp -s "$work/in.rgb" "$work/out.rgb"; then
    pass gst-launch-output-edited
else
    fail gst-launch-output-edited "output equals input or is missing"
fi
# The C API streamed the same way (one context for the stream, window 8: later windows anchored to the
# earlier ones) gives the same bytes.
if "$work/gst_capi_reference" "$model" 64 48 8 2 2 "a watercolor painting" "$work/in.rgb" \
        "$work/capi.rgb" >"$work/capi.log" 2>&1 && cmp "$work/capi.rgb" "$work/out.rgb"; then
    pass gst-launch-matches-c-api
else
    cat "$work/capi.log"; fail gst-launch-matches-c-api
fi
# window=0: the whole stream at EOS, the same bytes as the C API's whole-stream edit.
gst-launch-1.0 --no-fault -e -q videotestsrc num-buffers=20 ! "$source_caps" ! videoconvert ! video/x-raw,format=RGB \
    ! tokenflow "${settings[@]}" window=0 ! filesink location="$work/out0.rgb" >"$work/launch0.log" 2>&1
status=$?
if [ $status -eq 0 ] && "$work/gst_capi_reference" "$model" 64 48 0 2 2 "a watercolor painting" "$work/in.rgb" \
        "$work/capi0.rgb" >"$work/capi0.log" 2>&1 && cmp "$work/capi0.rgb" "$work/out0.rgb"; then
    pass gst-launch-window-0-matches-c-api
else
    cat "$work/launch0.log" "$work/capi0.log"; fail gst-launch-window-0-matches-c-api "exit $status"
fi

# --- gst-launch: a stream longer than the latent memory budget ------------------------------------
# latent_memory=0: every latent goes to the (unlinked) temporary file in temp_dir. 48 frames, window 0
# and 8: every frame out, in order, with its timestamps; temp_dir empty afterwards; the same bytes as
# the C API's with the same settings; with window 8 output starts while the input goes on.
long_frames=48
temp_dir=$work/latents
rm -rf "$temp_dir"; mkdir -p "$temp_dir"
gst-launch-1.0 --no-fault -q videotestsrc num-buffers=$long_frames ! "$source_caps" ! videoconvert \
    ! video/x-raw,format=RGB ! filesink location="$work/long-in.rgb" >"$work/long-in.log" 2>&1 \
    || fail gst-launch-long-input "$(cat "$work/long-in.log")"
for window in 0 8; do
    name=gst-launch-long-stream-window-$window
    log=$work/long-$window.log
    gst-launch-1.0 --no-fault -e -v videotestsrc num-buffers=$long_frames ! "$source_caps" ! videoconvert \
        ! video/x-raw,format=RGB ! identity name=before silent=false \
        ! tokenflow "${settings[@]}" window=$window latent-memory=0 temp-dir="$temp_dir" \
        ! identity name=after silent=false ! filesink location="$work/long-out-$window.rgb" >"$log" 2>&1
    status=$?
    before=$(grep -o "(before:sink) ([0-9]* bytes, dts: [^,]*, pts: [^,]*, duration: [^,]*" "$log" | sed 's/.*pts: //')
    after=$(grep -o "(after:sink) ([0-9]* bytes, dts: [^,]*, pts: [^,]*, duration: [^,]*" "$log" | sed 's/.*pts: //')
    frames_out=$(grep -c . <<<"$after")
    sorted=$(sort <<<"$after")
    left=$(ls -A "$temp_dir")
    if [ $status -eq 0 ] && [ "$frames_out" -eq $long_frames ] && [ "$before" = "$after" ] \
            && [ "$after" = "$sorted" ] && [ "$(sort -u <<<"$after" | grep -c .)" -eq $long_frames ] \
            && [ "$(tail -1 <<<"$after")" = "0:00:04.700000000, duration: 0:00:00.100000000" ] \
            && [ -z "$left" ]; then
        pass "$name-order-timestamps-temp-dir-empty"
    else
        tail -20 "$log"; diff <(echo "$before") <(echo "$after") | head
        fail "$name-order-timestamps-temp-dir-empty" "exit $status, $frames_out buffers, left in temp_dir: ${left:-nothing}"
    fi
    # First output relative to the last input: window 8 streams (the 8th input precedes the 1st output,
    # which precedes the 9th input); window 0 holds everything until EOS.
    order=$(grep -o "(\(before\|after\):sink) ([0-9]* bytes, dts: [^,]*, pts: [^,]*" "$log" \
        | sed 's/(\([a-z]*\):sink).*pts: \(.*\)/\1 \2/' | tr '\n' ';')
    if [ "$window" -eq 8 ]; then
        expected=("before 0:00:00.700000000;after 0:00:00.000000000;" "after 0:00:00.700000000;before 0:00:00.800000000;")
    else
        expected=("before 0:00:04.700000000;after 0:00:00.000000000;")
    fi
    ok=1
    for pattern in "${expected[@]}"; do [[ "$order" == *"$pattern"* ]] || ok=0; done
    if [ $ok -eq 1 ]; then
        pass "$name-output-timing"
    else
        echo "$order" | tr ';' '\n' | head -60; fail "$name-output-timing" "want ${expected[*]}"
    fi
    if "$work/gst_capi_reference" "$model" 64 48 $window 2 2 "a watercolor painting" "$work/long-in.rgb" \
            "$work/long-capi-$window.rgb" latent_memory=0 temp_dir="$temp_dir" >"$work/long-capi-$window.log" 2>&1 \
            && cmp "$work/long-capi-$window.rgb" "$work/long-out-$window.rgb"; then
        pass "$name-matches-c-api"
    else
        cat "$work/long-capi-$window.log"; fail "$name-matches-c-api"
    fi
done

# --- gst-launch: failures are errors, not crashes -------------------------------------------------
gst-launch-1.0 --no-fault videotestsrc num-buffers=2 ! "$source_caps" ! videoconvert ! video/x-raw,format=RGB \
    ! tokenflow model=/nonexistent/sd-model ! fakesink >"$work/missing.log" 2>&1
status=$?
if [ $status -ne 0 ] && ! crashed $status \
        && grep -q 'ERROR: from element .*tokenflow.*/nonexistent/sd-model' "$work/missing.log"; then
    pass gst-launch-missing-model-error
else
    cat "$work/missing.log"; fail gst-launch-missing-model-error "exit $status"
fi
# Settings that do not fit together (inversion_steps not a multiple of steps; the library's names with
# '_' are accepted too) fail when the engine is opened.
gst-launch-1.0 --no-fault videotestsrc num-buffers=2 ! "$source_caps" ! videoconvert ! video/x-raw,format=RGB \
    ! tokenflow "${settings[@]}" steps=3 inversion_steps=4 ! fakesink >"$work/settings.log" 2>&1
status=$?
if [ $status -ne 0 ] && ! crashed $status && grep -q 'ERROR: from element .*tokenflow' "$work/settings.log"; then
    pass gst-launch-bad-settings-error
else
    cat "$work/settings.log"; fail gst-launch-bad-settings-error "exit $status"
fi
# A size the library's grammar refuses fails at READY->PAUSED with an error naming the property.
gst-launch-1.0 --no-fault videotestsrc num-buffers=2 ! "$source_caps" ! videoconvert ! video/x-raw,format=RGB \
    ! tokenflow "${settings[@]}" size=100x7 ! fakesink >"$work/size.log" 2>&1
status=$?
if [ $status -ne 0 ] && ! crashed $status \
        && grep -q 'ERROR: from element .*tokenflow.*: Invalid value for property "size": .*100x7' "$work/size.log"; then
    pass gst-launch-bad-size-error
else
    cat "$work/size.log"; fail gst-launch-bad-size-error "exit $status"
fi
# A number outside its property's range never reaches the element: GObject refuses it with a warning
# naming the property and keeps the default, and the edit runs (the same in any element).
gst-launch-1.0 --no-fault videotestsrc num-buffers=2 ! "$source_caps" ! videoconvert ! video/x-raw,format=RGB \
    ! tokenflow "${settings[@]}" guidance=3e38 ! fakesink >"$work/range.log" 2>&1
status=$?
if [ $status -eq 0 ] && grep -q "out of range for property 'guidance'" "$work/range.log"; then
    pass gst-launch-out-of-range-number-refused-by-gobject
else
    cat "$work/range.log"; fail gst-launch-out-of-range-number-refused-by-gobject "exit $status"
fi
# No temporary folder for a stream beyond the memory budget: an error naming the folder, not a crash.
gst-launch-1.0 --no-fault videotestsrc num-buffers=2 ! "$source_caps" ! videoconvert ! video/x-raw,format=RGB \
    ! tokenflow "${settings[@]}" latent-memory=0 temp-dir=/nonexistent/tokenflow-tmp ! fakesink >"$work/tempdir.log" 2>&1
status=$?
if [ $status -ne 0 ] && ! crashed $status \
        && grep -q 'ERROR: from element .*tokenflow.*/nonexistent/tokenflow-tmp' "$work/tempdir.log"; then
    pass gst-launch-missing-temp-dir-error
else
    cat "$work/tempdir.log"; fail gst-launch-missing-temp-dir-error "exit $status"
fi
gst-launch-1.0 --no-fault videotestsrc num-buffers=2 ! video/x-raw,format=GRAY8,width=64,height=48 \
    ! tokenflow "${settings[@]}" ! fakesink >"$work/gray.log" 2>&1
status=$?
if [ $status -ne 0 ] && ! crashed $status && grep -q "tokenflow0 can't handle caps video/x-raw, format=(string)GRAY8" "$work/gray.log"; then
    pass gst-launch-refuses-gray8
else
    cat "$work/gray.log"; fail gst-launch-refuses-gray8 "exit $status"
fi

# --- a CPU without AVX (an emulated Nehalem): the library's portable path, never SIGILL ----------------
timeout 600 qemu-x86_64 -cpu Nehalem "$(command -v gst-launch-1.0)" --no-fault -q videotestsrc num-buffers=2 ! "$source_caps" \
    ! videoconvert ! video/x-raw,format=RGB ! tokenflow "${settings[@]}" ! filesink location="$work/nehalem.rgb" >"$work/nehalem.log" 2>&1
status=$?
if [ $status -eq 0 ] && [ "$(stat -c %s "$work/nehalem.rgb" 2>/dev/null)" = $((2 * 64 * 48 * 3)) ]; then
    pass gst-launch-on-a-cpu-without-avx
else
    tail -20 "$work/nehalem.log"; fail gst-launch-on-a-cpu-without-avx "exit $status"
fi

# --- install ---------------------------------------------------------------------------------------
prefix=$work/prefix
rm -rf "$prefix"
# gst-inspect's output is captured before grep reads it: `gst-inspect | grep -q` under pipefail fails
# whenever grep exits early and gst-inspect dies of SIGPIPE.
if Examples/gstreamer/install.sh "$prefix" >"$work/install.log" 2>&1 \
        && GST_PLUGIN_PATH=$prefix/lib/gstreamer-1.0 GST_REGISTRY=$work/registry-install.bin \
            gst-inspect-1.0 tokenflow >>"$work/install.log" 2>&1 \
        && grep -q "Filename  *$prefix/lib/gstreamer-1.0/libgsttokenflow.so" "$work/install.log"; then
    pass gst-install-prefix
else
    cat "$work/install.log"; fail gst-install-prefix
fi

# --- GstHarness unit tests (own PASS/FAIL lines) -------------------------------------------------
# gst-harness-settings-match-c-api runs with a decimal comma in LC_NUMERIC: a German locale, made here
# (the machine may have none installed; without it the test runs in the C locale and says so).
if [ ! -f "$work/locale/de_DE.UTF-8/LC_NUMERIC" ]; then
    mkdir -p "$work/locale"
    localedef -i de_DE -f UTF-8 "$work/locale/de_DE.UTF-8" >/dev/null 2>&1 || rm -rf "$work/locale/de_DE.UTF-8"
fi
LOCPATH=$work/locale "$work/gst_harness_test" "$model" || failed=1

exit $failed
