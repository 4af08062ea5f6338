#!/usr/bin/env bash
# The bad-input table (Tests/Host/bad-inputs.table) through every host: the `tokenflow` CLI, the C API (the
# dlopen example Examples/edit_clip.c), the FFmpeg filter and the GStreamer element. Each run must exit
# non-zero with the case's message, within a time limit (no hang), killed by no signal, and write no edited
# frame. Needs scripts/setup.sh's builds (release CLI, .build/prefix, FFmpeg, the GStreamer plugin).
set -u
cd "$(dirname "$0")/../.."
source Tests/Host/support/check.sh
root=$PWD
model=$root/Tests/Fixtures/models/sd2-tiny
cli=$root/.build/release/tokenflow-cli
library=$root/.build/prefix/lib/libtokenflow.so
ffmpeg=$root/.build/ffmpeg-build/ffmpeg
work=$(mktemp -d /tmp/tokenflow-bad-inputs.XXXXXX)
trap 'rm -rf "$work"' EXIT
export GST_PLUGIN_PATH=$root/.build/gstreamer GST_REGISTRY=$work/registry.bin
unset TOKENFLOW_MODEL

# The clip every host edits: 4 frames of 64x48 at 10 fps (the C API example and GStreamer make the same
# size and count themselves), and its inversion for the CLI's --inversion cases.
frames=4
cc -O1 -o "$work/clip_tool" Tests/Host/c/clip_tool.c -lavformat -lavcodec -lavutil -lm || { fail "bad-inputs build clip_tool" "cc failed"; finish; }
cc -O1 -I Include -o "$work/edit_clip" Examples/edit_clip.c -ldl || { fail "bad-inputs build edit_clip" "cc failed"; finish; }
"$work/clip_tool" make "$work/in.nut" $frames 64 48
"$ffmpeg" -hide_banner -nostdin -v error -y -filter_complex "testsrc2=size=64x48:rate=10,trim=end_frame=$frames" "$work/in.mp4" ||
    { fail "bad-inputs make the FFmpeg input" "ffmpeg failed"; finish; }
"$cli" invert "$work/in.nut" "$work/inv.safetensors" --model "$model" --steps 2 --inversion_steps 2 --size input > "$work/invert.log" 2>&1 ||
    { fail "bad-inputs invert the clip" "$(tail -c 300 "$work/invert.log")"; finish; }

# run HOST OUT: runs HOST on the settings in `settings` (NAME -> VALUE), output in $log.
run() {
    local host=$1 out=$2 args=() name
    case $host in
        cli)
            args=(edit "$work/in.nut" "$out")
            for name in "${!settings[@]}"; do args+=("--$name" "${settings[$name]}"); done
            command=("$cli" "${args[@]}") ;;
        c-api)
            for name in "${!settings[@]}"; do args+=("$name=${settings[$name]}"); done
            command=("$work/edit_clip" "$library" -n $frames -o "$out" "${args[@]}") ;;
        ffmpeg)
            local options=""
            for name in "${!settings[@]}"; do options+="${options:+:}$name=${settings[$name]}"; done
            command=("$ffmpeg" -hide_banner -nostdin -nostats -y -i "$work/in.mp4" -filter_complex "[0:v]tokenflow=$options" "$out") ;;
        gst)
            for name in "${!settings[@]}"; do args+=("$name=${settings[$name]}"); done
            command=("$(command -v gst-launch-1.0)" --no-fault videotestsrc num-buffers=$frames ! video/x-raw,width=64,height=48,framerate=10/1
                     ! videoconvert ! video/x-raw,format=RGB ! tokenflow "${args[@]}" ! filesink location="$out") ;;
    esac
    ( [ -n "$limit" ] && ulimit -v "$limit"; exec timeout "$seconds" "${command[@]}" ) > "$log" 2>&1
}

# wrote HOST OUT: whether the host wrote an edited frame. ffmpeg and GStreamer's filesink create their
# output file before the engine runs, so for them an empty file counts as nothing written.
wrote() {
    case $1 in
        ffmpeg|gst) [ -s "$2" ] ;;
        *) [ -e "$2" ] ;;
    esac
}

cases=0
while IFS='|' read -r name hosts breaking case_settings message; do
    name=$(echo $name); hosts=$(echo $hosts); breaking=$(echo $breaking); message=$(echo "$message" | sed 's/^ *//; s/ *$//')
    [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
    cases=$((cases + 1))
    case_dir=$work/case-$cases
    [ "$hosts" = all ] && hosts="cli c-api ffmpeg gst"
    for host in $hosts; do
        rm -rf "$case_dir"; mkdir -p "$case_dir"
        cp -rL "$model" "$case_dir/model"; cp "$work/inv.safetensors" "$case_dir/inv.safetensors"
        printf 'not a pickle' > "$case_dir/model.ckpt"
        [ "$breaking" = - ] || python3 Tests/Host/support/break_files.py ${breaking%% *} "$case_dir/$(cut -d' ' -f2 <<<"$breaking")" \
            $(cut -s -d' ' -f3- <<<"$breaking")
        declare -A settings=([model]="$case_dir/model" [prompt]="a red car" [steps]=2 [inversion_steps]=2 [size]=input)
        limit="" seconds=120
        for setting in $case_settings; do
            value=${setting#*=}; value=${value//\{case\}/$case_dir}
            case $setting in
                @ulimit=*) limit=$value ;;
                *) settings[${setting%%=*}]=$value ;;
            esac
        done
        out=$case_dir/out.$(case $host in cli|ffmpeg) echo mp4 ;; c-api) echo rgb ;; gst) echo raw ;; esac) log=$case_dir/$host.log
        run "$host" "$out"; status=$?
        if [ $status -eq 124 ]; then problem="hung (killed after ${seconds}s)"
        elif [ $status -gt 128 ] && [ $status -le 192 ]; then problem="killed by signal $((status - 128))"
        elif [ $status -eq 0 ]; then problem="exit 0"
        elif ! grep -Eq -- "$message" "$log"; then problem="exit $status without the message"
        elif wrote "$host" "$out"; then problem="an output was written"
        else problem=""; fi
        if [ -z "$problem" ]; then pass "bad-inputs $host: $name"
        else fail "bad-inputs $host: $name" "$problem: $(grep -v '^progress\|^set \|warning' "$log" | tail -c 400)"; fi
        unset settings
    done
done < Tests/Host/bad-inputs.table
expect "bad-inputs: the table has its cases" test $cases -ge 20
finish
