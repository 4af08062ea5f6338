#!/usr/bin/env bash
# A long fuzzing campaign over the parser targets of tokenflow-fuzz (Tests/Host/fuzz.sh is the short run).
#
#   scripts/fuzz_campaign.sh [--engine libfuzzer|deterministic] [--runs N] [--jobs N] [--timeout S]
#                            [--seed N] [TARGET...]
#
# libfuzzer (default): builds tokenflow-fuzz with -sanitize=fuzzer into .build-libfuzzer (the fuzzer runtime
# ships with the Swift toolchain) and runs each target for N executions, coverage-guided, keeping its corpus
# in .build/fuzz/corpus/<target> so the next campaign starts where this one stopped. deterministic: the
# driver of the short run (.build/release/tokenflow-fuzz, built by scripts/setup.sh) with N executions.
# Defaults: 1,000,000 executions per target, every target, as many targets at a time as there are cores,
# 10 s per execution before it counts as a hang.
#
# Crashing and hanging inputs go to .build/fuzz/crashes/<target>/; logs to .build/fuzz/logs/<engine>/.
# Fix the parser so the input is refused with an error, then add the input to
# Tests/Fuzz/regressions/<target>/ (the short run replays it). Prints executions, time and (libfuzzer) coverage per target; exits non-zero if any
# target crashed or hung.
set -uo pipefail
cd "$(dirname "$0")/.."

engine=libfuzzer runs=1000000 jobs=$(nproc) timeout=10 seed=1 targets=()
while [ $# -gt 0 ]; do
    case $1 in
        --engine) engine=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) echo "fuzz_campaign: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done

out=$PWD/.build/fuzz
mkdir -p "$out/logs/$engine" "$out/crashes" "$out/corpus"
# The targets write their input file once per execution: a memory file system keeps that off the disk.
scratch=$(mktemp -d "$( [ -w /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}" )/tokenflow-fuzz-campaign.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

case $engine in
    libfuzzer)
        # lld: gold fails on the instrumented objects (internal error in format_file_lineno).
        swift build -c release --scratch-path .build-libfuzzer --product tokenflow-fuzz \
            -Xswiftc -sanitize=fuzzer -Xswiftc -DLIBFUZZER -Xswiftc -use-ld=lld || exit 1
        fuzz=$PWD/.build-libfuzzer/release/tokenflow-fuzz ;;
    deterministic)
        swift build -c release --product tokenflow-fuzz || exit 1
        fuzz=$PWD/.build/release/tokenflow-fuzz ;;
    *) echo "fuzz_campaign: --engine is libfuzzer or deterministic" >&2; exit 2 ;;
esac
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("$fuzz" --list)

# campaign TARGET: one target's run; its summary line in $scratch/TARGET.summary.
campaign() {
    local target=$1 log=$out/logs/$engine/$1.log crashes=$out/crashes/$1 start status summary
    mkdir -p "$crashes" "$out/corpus/$target"
    start=$(date +%s)
    if [ "$engine" = libfuzzer ]; then
        # The Swift runtime's backtracer would take the trap signals from libFuzzer, which then could not
        # save the input. libFuzzer adds the target's seeds and regressions itself (-seed_inputs).
        SWIFT_BACKTRACE=enable=no TOKENFLOW_FUZZ_TARGET=$target TOKENFLOW_FUZZ_WORK=$scratch TOKENFLOW_FUZZ_REPOSITORY=$PWD \
            "$fuzz" "$out/corpus/$target" -runs="$runs" -timeout="$timeout" -seed="$seed" \
            -artifact_prefix="$crashes/" -print_final_stats=1 > "$log" 2>&1
        status=$?
        local executions coverage
        executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        coverage=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*/[0-9a-zA-Z]*')
        summary="${executions:-?} executions in $(( $(date +%s) - start )) s, ${coverage:-no coverage line}"
    else
        "$fuzz" --target "$target" --work "$scratch" --runs "$runs" --seed "$seed" --timeout "$timeout" > "$log" 2>&1
        status=$?
        if [ $status -gt 128 ]; then
            cp "$scratch/$target/input" "$crashes/crash-$(sha256sum "$scratch/$target/input" | cut -c1-16)"
        fi
        summary=$(grep -m1 ' executions in ' "$log" | sed "s/^$target: //")
        [ -n "$summary" ] || summary="stopped after $(( $(date +%s) - start )) s"
    fi
    if [ $status -ne 0 ]; then
        summary="FAILED (exit $status; inputs in $crashes, log $log): $summary"
    fi
    echo "$target: $summary" > "$scratch/$target.summary"
}

echo "fuzz_campaign: engine $engine, $runs executions per target, $jobs at a time: ${targets[*]}"
lscpu | grep 'Model name' | sed 's/  */ /g'
for target in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    campaign "$target" &
done
wait
failed=0
for target in "${targets[@]}"; do
    cat "$scratch/$target.summary"
    grep -q FAILED "$scratch/$target.summary" && failed=1
done
exit $failed
