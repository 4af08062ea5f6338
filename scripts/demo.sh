#!/usr/bin/env bash
# Set-up, then the FFmpeg filter on a short generated clip with the bundled tiny model:
#
#   scripts/demo.sh [--no-setup]     -> .build/demo/tokenflow-demo.mp4 (and its source clip beside it)
#
# The bundled Tests/Fixtures/models/sd2-tiny is a RANDOM-WEIGHT SMOKE MODEL: it has Stable Diffusion's
# structure but no training, so the "edit" is noise. It shows the whole path (set-up, the C library, the
# filter in ffmpeg, progress, encoding) in seconds. For a real edit, give a real diffusers folder, e.g.
#   .build/ffmpeg-build/ffmpeg -i in.mp4 -vf "tokenflow=model=/models/stable-diffusion-2-1-base:prompt='...'" out.mp4
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "--no-setup" ] || scripts/setup.sh
ffmpeg=$(ffmpeg-filter/build 2>/dev/null | tail -n 1)
model=$PWD/Tests/Fixtures/models/sd2-tiny
out=$PWD/.build/demo
mkdir -p "$out"

echo "demo: model $model -- a RANDOM-WEIGHT smoke model: expect noise, not an edit"
"$ffmpeg" -hide_banner -nostdin -loglevel error -y -filter_complex "testsrc2=size=128x96:rate=10,trim=end_frame=24" \
    -c:v libx264 -pix_fmt yuv420p "$out/source.mp4"
"$ffmpeg" -hide_banner -nostdin -nostats -y -i "$out/source.mp4" \
    -vf "tokenflow=model=$model:prompt=a watercolor painting:inversion_prompt=a test pattern:steps=4:inversion_steps=4:size=input:window=12" \
    -c:v libx264 -pix_fmt yuv420p "$out/tokenflow-demo.mp4" 2>&1 | sed -n '/Parsed_tokenflow\|rror/p'
echo "demo: source clip  $out/source.mp4"
echo "demo: edited clip  $out/tokenflow-demo.mp4 (24 frames, 128x96; random-weight model)"
