#!/usr/bin/env bash
# Runs every test: set-up (packages + release build), then the Swift test suites.
# Release mode because the numeric kernels are ~50x slower unoptimised.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift test -c release --skip-build
