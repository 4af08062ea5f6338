#!/usr/bin/env bash
# The FFmpeg filter (ffmpeg-filter/): the ffmpeg built by ffmpeg-filter/build (scripts/setup.d/
# 50-ffmpeg-filter.sh; cached, so running it here costs a second) with the tiny random-weight model.
# Windows and the last partial window, pts and frame properties, byte equality with the C API driven the
# same streaming way (with non-default settings of every kind), streams longer than the latent memory
# budget (temporary file in temp_dir, gone afterwards, even when ffmpeg is killed mid-edit), output
# starting before the input ends (window=W), filter chains, audio, progress lines, and bad
# options/models/inputs (non-zero exit, an error naming the problem, no output file where ffmpeg allows
# it). The options themselves are checked against the library's table by Tests/Host/options.sh.
set -u
cd "$(dirname "$0")/../.."
source Tests/Host/support/check.sh
root=$PWD
prefix=$root/.build/prefix
model=$root/Tests/Fixtures/models/sd2-tiny
work=$(mktemp -d /tmp/tokenflow-ffmpeg-filter-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
unset TOKENFLOW_MODEL
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig

ffmpeg=$(ffmpeg-filter/build 2> "$work/build.log" | tail -n 1)
if [ ! -x "$ffmpeg" ]; then fail "ffmpeg-filter build" "$(tail -n 5 "$work/build.log")"; finish; fi
pass "ffmpeg-filter build ($ffmpeg)"
ffprobe=$(dirname "$ffmpeg")/ffprobe
ff() { "$ffmpeg" -hide_banner -nostdin -nostats -y "$@"; }

quick="model=$model:prompt=a red car:steps=2:inversion_steps=2:size=input"
clip="testsrc2=size=64x48:rate=10,trim=end_frame=20"
frame_bytes=$((64 * 48 * 3))
# framemd5 lines "0, dts, pts, duration, size, hash" -> one field per frame
md5_field() { grep '^0,' "$1" | tr -d ' ' | cut -d, -f"$2"; }

# The C API reference (Tests/Host/c/ffmpeg_filter_reference.c): edits to compare the filter's bytes with.
reference=$work/reference
cc -std=c99 -Wall -Wextra -Werror -O1 -o "$reference" Tests/Host/c/ffmpeg_filter_reference.c \
    $(pkg-config --cflags --libs tokenflow) -Wl,-rpath,"$prefix/lib" 2> "$work/cc.log" ||
    fail "ffmpeg-filter build the C API reference" "$(head -c 400 "$work/cc.log")"

# --- two full windows and a partial one: 20 frames, window=8, irregular pts -------------------------
# setpts makes the timestamps irregular, so they can only survive if the filter keeps the input's.
graph="$clip,setpts=N*N+3"
ff -filter_complex "$graph,null" -fps_mode passthrough -f framemd5 "$work/source.md5" 2> "$work/source.log"
ff -filter_complex "$graph,tokenflow=$quick:window=8" -fps_mode passthrough -f framemd5 "$work/edited.md5" 2> "$work/edited.log"
status=$?
expect "ffmpeg-filter window=8 run succeeds" test $status -eq 0
expect "ffmpeg-filter window=8: 20 frames in, 20 out" test "$(grep -c '^0,' "$work/edited.md5")" -eq 20
expect "ffmpeg-filter window=8: pts preserved" test "$(md5_field "$work/edited.md5" 3 | tr '\n' ' ')" = "$(md5_field "$work/source.md5" 3 | tr '\n' ' ')"
expect "ffmpeg-filter window=8: size preserved (64x48 rgb24)" bash -c "grep -q '^#dimensions 0: 64x48' '$work/edited.md5' && \
    test \"\$(grep '^0,' '$work/edited.md5' | tr -d ' ' | cut -d, -f5 | sort -u)\" = $frame_bytes"
same=$(paste -d' ' <(md5_field "$work/source.md5" 6) <(md5_field "$work/edited.md5" 6) | awk '$1 == $2' | wc -l)
expect "ffmpeg-filter window=8: every output frame differs from its input" test "$same" -eq 0
expect "ffmpeg-filter window=8: three edits by one engine context, the last on the partial window 16-19" bash -c \
    "grep -q 'window 0: editing frames 0-7' '$work/edited.log' && grep -q 'window 1: editing frames 8-15' '$work/edited.log' && \
     grep -q 'window 2: editing frames 16-19' '$work/edited.log' && grep -q 'window 2: 4 frames edited' '$work/edited.log' && \
     test \$(grep -c 'editing frames' '$work/edited.log') -eq 3"
expect "ffmpeg-filter progress: one line per sampling step per window" test \
    "$(grep -c 'sampling step [12]/2 .*elapsed, stage ETA' "$work/edited.log")" -eq 6
expect "ffmpeg-filter progress: inversion and sampling steps logged per window" bash -c \
    "grep -q 'window 0: inversion step 2/2' '$work/edited.log' && grep -q 'window 2: sampling step 2/2' '$work/edited.log'"

# --- byte equality with the C API on the same raw frames (two windows + a partial one) ----------------
# The reference is given the same settings as text; the filter passes its AVOption values on as text. It
# drives one context the streaming way (send, drain, ..., end of stream, drain), like the filter: windows
# after the first are anchored to earlier ones, so they are not independent edits.
ff -filter_complex "$clip,format=rgb24" -f rawvideo "$work/in.rgb" 2> /dev/null
raw_in=(-f rawvideo -pixel_format rgb24 -video_size 64x48 -framerate 10 -i "$work/in.rgb")
quick_settings=("model=$model" "prompt=a red car" steps=2 inversion_steps=2 size=input)
ff "${raw_in[@]}" -vf "tokenflow=$quick:window=8" -f rawvideo -pix_fmt rgb24 "$work/filter.rgb" 2> "$work/filter.log"
"$reference" "$work/in.rgb" "$work/capi.rgb" 64 48 "${quick_settings[@]}" window=8 > "$work/reference.log" 2>&1
expect "ffmpeg-filter output is byte-identical to the C API's (same settings, window=8, 20 frames)" bash -c \
    "test -s '$work/capi.rgb' && test \$(stat -c %s '$work/filter.rgb') -eq $((20 * frame_bytes)) && cmp -s '$work/filter.rgb' '$work/capi.rgb'"
"$reference" "$work/in.rgb" "$work/capi-all.rgb" 64 48 "${quick_settings[@]}" > /dev/null 2>&1
ff "${raw_in[@]}" -vf "tokenflow=$quick" -f rawvideo "$work/filter-all.rgb" 2> /dev/null
expect "ffmpeg-filter window=0 (whole stream) is byte-identical to one C API run" \
    bash -c "test -s '$work/capi-all.rgb' && cmp -s '$work/filter-all.rgb' '$work/capi-all.rgb'"
expect "ffmpeg-filter windows change the result (window=8 differs from window=0)" bash -c "! cmp -s '$work/filter.rgb' '$work/filter-all.rgb'"
# COVE through the filter: 20 frames in groups of at most 8 (7 + 7 + 6), the same bytes as the C API's.
ff "${raw_in[@]}" -vf "tokenflow=$quick:method=cove:cove_frames=8" -f rawvideo "$work/filter-cove.rgb" 2> "$work/filter-cove.log"
"$reference" "$work/in.rgb" "$work/capi-cove.rgb" 64 48 "${quick_settings[@]}" method=cove cove_frames=8 > /dev/null 2>&1
expect "ffmpeg-filter method=cove is byte-identical to the C API's" \
    bash -c "test -s '$work/capi-cove.rgb' && test \$(stat -c %s '$work/filter-cove.rgb') -eq $((20 * frame_bytes)) && cmp -s '$work/filter-cove.rgb' '$work/capi-cove.rgb'"
# Values of every AVOption type off their defaults: a choice (passed on by name), doubles (which the
# filter passes as 17 digits, 0.55000000000000004, and the reference as typed), the largest seed (an
# int64 option), a string; batches of 3 in windows of 7.
tuned=(method=sdedit steps=4 inversion_steps=4 strength=0.55 guidance=3.3 seed=4294967295 negative_prompt=grey batch_size=3 window=7)
ff "${raw_in[@]}" -vf "tokenflow=$quick:$(IFS=:; echo "${tuned[*]}")" -f rawvideo "$work/filter-tuned.rgb" 2> "$work/filter-tuned.log"
"$reference" "$work/in.rgb" "$work/capi-tuned.rgb" 64 48 "${quick_settings[@]}" "${tuned[@]}" > "$work/reference-tuned.log" 2>&1
expect "ffmpeg-filter non-default values of each option type reach the library unchanged (byte-identical to the C API)" bash -c \
    "test -s '$work/capi-tuned.rgb' && cmp -s '$work/filter-tuned.rgb' '$work/capi-tuned.rgb' && ! cmp -s '$work/filter-tuned.rgb' '$work/filter.rgb'"
expect "ffmpeg-filter progress: the step count is the library's (sdedit, steps=4, strength=0.55 -> 2 steps)" bash -c \
    "grep -q 'window 2: sampling step 2/2 ' '$work/filter-tuned.log' && ! grep -q 'sampling step [0-9]*/4 ' '$work/filter-tuned.log'"

# --- streams longer than the latent memory budget -----------------------------------------------------
# latent_memory=0 puts every latent in the library's unlinked temporary file in temp_dir. 64 frames with
# irregular pts, one edit (window=0) and four (window=16): count, order and pts kept, the same bytes as
# with the latents in memory, and nothing left in temp_dir. showinfo before and after the filter logs
# when each frame enters and leaves it, for the streaming check below.
long="testsrc2=size=64x48:rate=10,trim=end_frame=64,setpts=N*N+3"
spill="latent_memory=0:temp_dir=$work/tmp"
mkdir -p "$work/tmp"
ff -filter_complex "$long,null" -fps_mode passthrough -f framemd5 "$work/long-source.md5" 2> /dev/null
for w in 0 16; do
    ff -filter_complex "$long,showinfo,tokenflow=$quick:window=$w:$spill,showinfo" -fps_mode passthrough \
        -f framemd5 "$work/long$w.md5" 2> "$work/long$w.log"
    status=$?
    ff -filter_complex "$long,tokenflow=$quick:window=$w" -fps_mode passthrough -f framemd5 "$work/long$w-memory.md5" 2> /dev/null
    expect "ffmpeg-filter long stream, latent_memory=0, window=$w: 64 frames out, in order, pts kept" bash -c \
        "test $status -eq 0 && test \$(grep -c '^0,' '$work/long$w.md5') -eq 64 && \
         test '$(md5_field "$work/long$w.md5" 3 | tr '\n' ' ')' = '$(md5_field "$work/long-source.md5" 3 | tr '\n' ' ')'"
    expect "ffmpeg-filter long stream, latent_memory=0, window=$w: same bytes as with the latents in memory" bash -c \
        "test -s '$work/long$w-memory.md5' && test '$(md5_field "$work/long$w.md5" 6 | tr '\n' ' ')' = '$(md5_field "$work/long$w-memory.md5" 6 | tr '\n' ' ')'"
    expect "ffmpeg-filter long stream, latent_memory=0, window=$w: temp_dir empty afterwards" test -z "$(ls -A "$work/tmp")"
done
# Streaming: with window=16 the first window's frames leave the filter (the showinfo after it, instance 5)
# before the second window is edited, and that before the input's last frame enters it (the showinfo
# before it, instance 3); with window=0 nothing leaves before the input has ended. Line numbers in the log,
# which one thread writes in order.
line_of() { grep -n -m 1 -- "$2" "$1" | cut -d: -f1; }
out15=$(line_of "$work/long16.log" 'Parsed_showinfo_5.* n: *15 ')
edit1=$(line_of "$work/long16.log" 'window 1: editing frames 16-31')
in63=$(line_of "$work/long16.log" 'Parsed_showinfo_3.* n: *63 ')
expect "ffmpeg-filter window=16 streams: window 0's frames are output before window 1 is edited, before the input ends ($out15 < $edit1 < $in63)" \
    test -n "$out15" -a -n "$edit1" -a -n "$in63" -a "${out15:-0}" -lt "${edit1:-0}" -a "${edit1:-0}" -lt "${in63:-0}"
out0=$(line_of "$work/long0.log" 'Parsed_showinfo_5.* n: *0 ')
in63=$(line_of "$work/long0.log" 'Parsed_showinfo_3.* n: *63 ')
expect "ffmpeg-filter window=0: the first frame is output after the input has ended ($in63 < $out0)" \
    test -n "$out0" -a -n "$in63" -a "${in63:-0}" -lt "${out0:-0}"

# A failure half-way leaves no temporary file: ffmpeg killed (SIGKILL, no cleanup) during the edit. The
# temporary file is checked to be open (unlinked, in temp_dir) just before the kill.
rm -rf "$work/tmp"; mkdir -p "$work/tmp"
"$ffmpeg" -hide_banner -nostdin -nostats -y -filter_complex "$long,tokenflow=$quick:steps=20:inversion_steps=20:$spill" \
    -f null - 2> "$work/kill.log" &
pid=$!
for _ in $(seq 1200); do
    grep -q 'inversion step 1/20' "$work/kill.log" && break
    kill -0 $pid 2> /dev/null || break
    sleep 0.05
done
held=$(ls -l /proc/$pid/fd 2> /dev/null | grep -c "$work/tmp/tokenflow-latents-.* (deleted)")
{ kill -9 $pid; wait $pid; } 2> /dev/null; status=$?  # (2>: no "Killed" job notice)
expect "ffmpeg-filter killed mid-edit (exit $status, $held unlinked temporary file(s) in temp_dir open before the kill)" \
    test $status -eq 137 -a "$held" -ge 1
expect "ffmpeg-filter killed mid-edit: temp_dir empty afterwards" test -z "$(ls -A "$work/tmp")"

# --- frame properties: pts, packet position, key frame and picture type from a real file --------------
ff -filter_complex "$clip" -c:v libx264 -pix_fmt yuv420p "$work/clip.mp4" 2> /dev/null
props() { grep -o 'n: *[0-9]* pts: *[0-9]* .*pos: *[0-9]*\|iskey:[01] type:[A-Z?]' "$1" | tr -s ' ' | paste -d' ' - -; }
ff -i "$work/clip.mp4" -vf showinfo -f null - 2> "$work/props-source.log"
ff -i "$work/clip.mp4" -vf "tokenflow=$quick:window=8,showinfo" -f null - 2> "$work/props-edited.log"
edited=$(props "$work/props-edited.log"); source_props=$(props "$work/props-source.log")
expect "ffmpeg-filter keeps frame properties (pts, pos, key frame, picture type) of an mp4 with B-frames" \
    test "$(grep -c 'type:B' <<<"$edited")" -gt 0 -a "$(wc -l <<<"$edited")" -eq 20 -a "$edited" = "$source_props"

# --- chains -----------------------------------------------------------------------------------------
ff -filter_complex "testsrc2=size=96x72:rate=10,trim=end_frame=20,scale=64:48,tokenflow=$quick:window=8,fps=5" \
    -c:v libx264 -pix_fmt yuv420p "$work/chain.mp4" 2> "$work/chain.log"
status=$?
expect "ffmpeg-filter chain scale=64:48,tokenflow,fps=5 -> 10 frames of 64x48 in mp4" bash -c "test $status -eq 0 && \
    test \"\$('$ffprobe' -v error -count_frames -select_streams v -show_entries stream=width,height,nb_read_frames -of csv=p=0 '$work/chain.mp4')\" = 64,48,10"
ff -filter_complex "testsrc2=size=64x48:rate=10,trim=end_frame=6,tokenflow=$quick:method=reconstruct,split[a][b];[a]null[c];[b]tokenflow=$quick:method=sdedit:strength=0.5[d]" \
    -map "[c]" -f framemd5 "$work/m1.md5" -map "[d]" -f framemd5 "$work/m2.md5" 2> "$work/methods.log"
expect "ffmpeg-filter methods reconstruct and sdedit, two tokenflow instances in one graph" bash -c \
    "test \$(grep -c '^0,' '$work/m1.md5') -eq 6 && test \$(grep -c '^0,' '$work/m2.md5') -eq 6"
TOKENFLOW_MODEL=$model ff -filter_complex "testsrc2=size=64x48:rate=10,trim=end_frame=3,tokenflow=steps=2:inversion_steps=2:size=input:threads=1" \
    -f framemd5 "$work/env.md5" 2> "$work/env.log"
expect "ffmpeg-filter model defaults to \$TOKENFLOW_MODEL (and threads= is accepted)" test "$(grep -c '^0,' "$work/env.md5" 2>/dev/null)" = 3

# --- audio ------------------------------------------------------------------------------------------
ff -filter_complex "testsrc2=size=64x48:rate=10,trim=end_frame=50[v];sine=frequency=440:sample_rate=44100,atrim=end=5[a]" \
    -map "[v]" -map "[a]" -c:v libx264 -pix_fmt yuv420p -c:a aac "$work/av.mp4" 2> /dev/null
streams() { "$ffprobe" -v error -count_packets -show_entries stream=codec_type,codec_name,nb_read_packets -of csv=p=0 "$1" | tr '\n' ' '; }
ff -i "$work/av.mp4" -vf "tokenflow=$quick" -c:a copy "$work/av-copy.mp4" 2> "$work/av-copy.log"
av_streams=$(streams "$work/av.mp4")
expect "ffmpeg-filter test clip has 50 video frames and aac audio ($av_streams)" test "${av_streams%% aac,audio,*}" = "h264,video,50"
expect "ffmpeg-filter audio + video mp4, whole-stream window, -c:a copy: every audio packet kept" \
    test "$(streams "$work/av-copy.mp4")" = "$av_streams"
ff -i "$work/av.mp4" -vf "tokenflow=$quick:window=16" -c:a pcm_s16le "$work/av-pcm.mkv" 2> "$work/av-pcm.log"
expect "ffmpeg-filter audio re-encoded (pcm in mkv) beside the edited video" bash -c \
    "'$ffprobe' -v error -show_entries stream=codec_name -of csv=p=0 '$work/av-pcm.mkv' | tr '\n' ' ' | grep -q 'h264 pcm_s16le'"
# Audio packets wait in ffmpeg's mux queue until the first edited frame; past muxing_queue_data_threshold
# (50 MB by default) only max_muxing_queue_size (128) packets may wait. Forced here with a tiny threshold.
ff -i "$work/av.mp4" -vf "tokenflow=$quick" -c:a copy -muxing_queue_data_threshold 1000 "$work/q1.mp4" 2> "$work/q1.log"
status=$?
ff -i "$work/av.mp4" -vf "tokenflow=$quick" -c:a copy -muxing_queue_data_threshold 1000 -max_muxing_queue_size 100000 "$work/q2.mp4" 2> "$work/q2.log"
expect "ffmpeg-filter mux queue: a full queue fails clearly, -max_muxing_queue_size fixes it (README)" bash -c \
    "test $status -ne 0 && grep -q 'Too many packets buffered' '$work/q1.log' && test '$(streams "$work/q2.mp4")' = '$av_streams'"

# --- bad options, models and inputs -----------------------------------------------------------------
# -filter_complex graphs are initialised before the output file is opened: nothing is left behind.
# (With -vf, ffmpeg opens the output first, so an empty file remains; checked below.)
bad() { # NAME EXPECTED-MESSAGE FILTER-OPTIONS
    local name=$1 message=$2 options=$3 out=$work/bad.mp4
    rm -f "$out"
    ff -filter_complex "$clip,tokenflow=$options" "$out" > "$work/bad.log" 2>&1; local status=$?
    if [ $status -ne 0 ] && grep -q -- "$message" "$work/bad.log" && [ ! -e "$out" ]; then pass "$name"
    else fail "$name" "exit $status, output $(ls "$out" 2>/dev/null || echo none): $(grep -i 'tokenflow\|error' "$work/bad.log" | head -c 400)"; fi
}
rm -rf "$work/truncated"; cp -rL "$model" "$work/truncated"
truncate -s 1000 "$work/truncated/unet/diffusion_pytorch_model.safetensors"
bad "ffmpeg-filter bad: missing model dir" "model not found.*$work/nonexistent" "model=$work/nonexistent:steps=2:inversion_steps=2"
bad "ffmpeg-filter bad: truncated unet weights" "input/output error.*unet/diffusion_pytorch_model.safetensors" "model=$work/truncated:steps=2:inversion_steps=2"
bad "ffmpeg-filter bad: steps=0" "'steps' out of range" "$quick:steps=0"
bad "ffmpeg-filter bad: pnp_attn_t=2" "'pnp_attn_t' out of range" "$quick:pnp_attn_t=2"
bad "ffmpeg-filter bad: method=bogus" "Error setting option method to value bogus" "$quick:method=bogus"
bad "ffmpeg-filter bad: inversion_steps not a multiple of steps" "inversion_steps that are a multiple of steps" "$quick:steps=2:inversion_steps=3"
# The library parses sizes: its error, naming the option, reaches the log.
bad "ffmpeg-filter bad: size=bogus" "Setting option 'size' failed.*bogus" "$quick:size=bogus"
bad "ffmpeg-filter bad: size=hd720 (size names are not part of the grammar)" "Setting option 'size' failed.*hd720" "$quick:size=hd720"
bad "ffmpeg-filter bad: size not a multiple of 8" "multiples of 8" "$quick:size=60x44"
if [ ! -e "$prefix/share/tokenflow/model" ]; then
    bad "ffmpeg-filter bad: no model anywhere -> how to set one" "TOKENFLOW_MODEL" "steps=2:inversion_steps=2"
fi
rm -f "$work/vf.mp4"
ff -i "$work/clip.mp4" -vf "tokenflow=model=$work/nonexistent" "$work/vf.mp4" > "$work/vf.log" 2>&1; status=$?
expect "ffmpeg-filter bad model with -vf: non-zero exit, error named (ffmpeg leaves an empty output file)" bash -c \
    "test $status -ne 0 && grep -q 'model not found' '$work/vf.log' && test ! -s '$work/vf.mp4'"

# Resolution changes: inside one graph (scale with eval=frame) the filter fails; the ffmpeg CLI instead
# rebuilds the graph when a decoded stream changes size (dropping held frames): the new instance refuses.
ff -i "$work/clip.mp4" -vf "scale=w='if(lt(n,5),64,32)':h='if(lt(n,5),48,24)':eval=frame,tokenflow=$quick" \
    -f framemd5 "$work/res1.md5" > "$work/res1.log" 2>&1; status=$?
expect "ffmpeg-filter resolution change inside the graph -> error" bash -c \
    "test $status -ne 0 && grep -q 'input resolution changed mid-stream, from 64x48 to 32x24 at frame 5' '$work/res1.log'"
ff -filter_complex "testsrc2=size=64x48:rate=10,trim=end_frame=6" -c:v libx264 -pix_fmt yuv420p "$work/a.h264" 2> /dev/null
ff -filter_complex "testsrc2=size=32x24:rate=10,trim=end_frame=6" -c:v libx264 -pix_fmt yuv420p "$work/b.h264" 2> /dev/null
cat "$work/a.h264" "$work/b.h264" > "$work/ab.h264"
ff -i "$work/ab.h264" -vf "tokenflow=$quick" -f framemd5 "$work/res2.md5" > "$work/res2.log" 2>&1; status=$?
expect "ffmpeg-filter resolution change in the decoded stream (graph rebuilt) -> error" bash -c \
    "test $status -ne 0 && grep -q 'filter graph was rebuilt mid-stream.*dropped 6 unedited' '$work/res2.log'"
ff -reinit_filter 0 -i "$work/ab.h264" -vf "scale=64:48,tokenflow=$quick" -f framemd5 "$work/res3.md5" > "$work/res3.log" 2>&1; status=$?
expect "ffmpeg-filter resolution change with -reinit_filter 0 and scale: 12 frames of 64x48" bash -c \
    "test $status -eq 0 && test \$(grep -c '^0,' '$work/res3.md5') -eq 12 && grep -q '^#dimensions 0: 64x48' '$work/res3.md5'"

# On a CPU without AVX (an emulated Nehalem) the filter runs the library's portable path: an edit, never SIGILL.
timeout 600 qemu-x86_64 -cpu Nehalem "$ffmpeg" -hide_banner -nostdin -nostats -y \
    -filter_complex "$clip,trim=end_frame=2,tokenflow=$quick" -f framemd5 "$work/nehalem.md5" > "$work/nehalem.log" 2>&1; status=$?
expect "ffmpeg-filter edits on a CPU without AVX (qemu Nehalem): 2 frames" bash -c \
    "test $status -eq 0 && test \$(grep -c '^0,' '$work/nehalem.md5') -eq 2"
finish
