#!/usr/bin/env bash
# Long-video benchmark (not a test): generated streams of increasing length through the real ffmpeg with
# the tokenflow filter and the tiny random-weight model, as one whole-stream edit (window=0). Prints, per
# length, the peak RSS of the ffmpeg process, the wall time, the time per frame and the ratios to the
# shortest stream, and the latent bytes per frame the engine keeps.
# Usage: scripts/bench_long_video.sh [FRAMES...]   (default 200 1000 4000)
#   SIZE=WxH of the generated frames (default 64x48), WORKING=working size (default input),
#   LATENT_MEMORY=MiB of latents in memory (default 1: everything past it goes to the temporary file),
#   STEPS=sampling and inversion steps (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
ffmpeg=.build/ffmpeg-build/ffmpeg
[ -x "$ffmpeg" ] || { echo "bench_long_video: build ffmpeg first (scripts/setup.sh)" >&2; exit 1; }
command -v /usr/bin/time > /dev/null || { echo "bench_long_video: needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
size=${SIZE:-64x48} working=${WORKING:-input} memory=${LATENT_MEMORY:-1} steps=${STEPS:-1}
lengths=("$@"); [ ${#lengths[@]} -gt 0 ] || lengths=(200 1000 4000)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
echo "stream ${size}, working size ${working}, steps ${steps}, latent_memory ${memory} MiB, model sd2-tiny (random weights)"
first_rss="" first_per_frame=""
for frames in "${lengths[@]}"; do
    log=$(mktemp)
    /usr/bin/time -f "%M %e" -o "$log" "$ffmpeg" -hide_banner -loglevel error -filter_complex \
        "testsrc2=size=${size}:rate=25,trim=end_frame=${frames},tokenflow=model=Tests/Fixtures/models/sd2-tiny:steps=${steps}:inversion_steps=${steps}:size=${working}:latent_memory=${memory}" \
        -f null -
    read -r rss seconds < "$log"
    rm -f "$log"
    per_frame=$(awk -v s="$seconds" -v n="$frames" 'BEGIN { printf "%.2f", 1000 * s / n }')
    first_rss=${first_rss:-$rss} first_per_frame=${first_per_frame:-$per_frame}
    awk -v n="$frames" -v r="$rss" -v s="$seconds" -v p="$per_frame" -v r0="$first_rss" -v p0="$first_per_frame" \
        'BEGIN { printf "frames=%d peak_rss=%.1f MB (x%.2f) wall=%.1f s per_frame=%s ms (x%.2f)\n", n, r / 1024, r / r0, s, p, p / p0 }'
done
