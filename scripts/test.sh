#!/usr/bin/env bash
# Runs every test: set-up (packages + release build + integrations), the Swift test suites, then the
# host tests (Tests/Host/*.sh: C programs, the FFmpeg filter, the GStreamer element).
# Release mode because the numeric kernels are ~50x slower unoptimised.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || { echo "test: set-up failed"; exit 1; }

failed=0
swift test -c release --skip-build || failed=1

# Each host test script prints "PASS <name>" / "FAIL <name>" lines and exits non-zero on failure.
passes=0 fails=0 suites=0
for suite in Tests/Host/*.sh; do
    [ -e "$suite" ] || continue
    suites=$((suites + 1))
    echo "== $suite"
    output=$(bash "$suite" 2>&1); status=$?
    echo "$output"
    passes=$((passes + $(grep -c '^PASS ' <<<"$output")))
    fails=$((fails + $(grep -c '^FAIL ' <<<"$output")))
    if [ $status -ne 0 ] && ! grep -q '^FAIL ' <<<"$output"; then
        echo "FAIL $suite (exit $status)"; fails=$((fails + 1))
    fi
done
[ $fails -eq 0 ] || failed=1
[ $suites -eq 0 ] || echo "host: $passes passed, $fails failed"
exit $failed
