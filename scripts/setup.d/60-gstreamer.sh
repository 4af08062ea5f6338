#!/usr/bin/env bash
# GStreamer element (Examples/gstreamer): Debian packages for building it (GStreamer 1.22 headers, with
# gstcheck for the GstHarness tests) and for its tests (gst-launch-1.0/gst-inspect-1.0, videotestsrc,
# videoconvert), then builds .build/gstreamer/libgsttokenflow.so against the library installed by the
# earlier step in .build/prefix. Idempotent (packages and plugin are only fetched/built when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh

require_packages libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
    gstreamer1.0-tools gstreamer1.0-plugins-base
Examples/gstreamer/build.sh
