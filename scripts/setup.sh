#!/usr/bin/env bash
# Set-up on a fresh Debian machine: installs the Debian packages the project builds against, builds
# the Swift package (release), then runs each scripts/setup.d/*.sh step (library install, host
# integrations). Idempotent: packages already installed are not fetched again, builds are cached.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

require_packages libopenblas-dev libdnnl-dev pkg-config libavformat-dev libavcodec-dev libswscale-dev libavutil-dev
swift build -c release --build-tests
for step in scripts/setup.d/*.sh; do
    [ -e "$step" ] || continue
    echo "setup: $step"
    bash "$step"
done
