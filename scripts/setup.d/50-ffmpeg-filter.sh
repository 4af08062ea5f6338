#!/usr/bin/env bash
# FFmpeg filter: builds a minimal FFmpeg 5.1 (Debian's source package) with the tokenflow filter compiled
# in, against the library installed by the earlier step in .build/prefix -> .build/ffmpeg-build/ffmpeg
# (and ffprobe). First build a few minutes on 2 cores; cached afterwards (a no-op when nothing changed).
set -euo pipefail
cd "$(dirname "$0")/../.."
ffmpeg=$(ffmpeg-filter/build | tail -n 1)
echo "setup: ffmpeg with the tokenflow filter: $ffmpeg"
