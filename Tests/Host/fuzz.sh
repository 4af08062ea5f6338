#!/usr/bin/env bash
# Fuzzing (the short run; scripts/fuzz_campaign.sh runs long campaigns): every parser target of
# tokenflow-fuzz (safetensors, model configs, tokenizer files, inversion files, keyframe files, single-file
# checkpoints) replays its regression inputs (Tests/Fuzz/regressions/<target>/, inputs that once crashed)
# and then runs a deterministic campaign of mutated inputs. A refused input passes; a signal (a trap) or a
# hang (one execution over the timeout) fails, and the input is kept in .build/fuzz/crashes/ to be added to
# the regressions with its fix. Two targets run at a time (about a minute on 2 cores).
set -u
cd "$(dirname "$0")/../.."
source Tests/Host/support/check.sh
fuzz=$PWD/.build/release/tokenflow-fuzz
runs=${TOKENFLOW_FUZZ_RUNS:-20000}
seed=${TOKENFLOW_FUZZ_SEED:-1}
timeout=10
crashes=$PWD/.build/fuzz/crashes
work=$(mktemp -d /tmp/tokenflow-fuzz-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
[ -x "$fuzz" ] || { echo "FAIL fuzz: $fuzz is not built (scripts/setup.sh builds it)"; exit 1; }

# run_target TARGET: replay, then campaign; output in $work/TARGET.log, status of the first failing step
# in $work/TARGET.status.
run_target() {
    local target=$1 status=0
    local regressions=(Tests/Fuzz/regressions/"$target"/*)
    [ -e "${regressions[0]}" ] || regressions=()
    {
        "$fuzz" --target "$target" --work "$work" --timeout $timeout --replay "${regressions[@]}" || status=$?
        [ $status -ne 0 ] || "$fuzz" --target "$target" --work "$work" --timeout $timeout --runs "$runs" --seed "$seed" || status=$?
    } > "$work/$target.log" 2>&1
    echo $status > "$work/$target.status"
}

# report TARGET: PASS/FAIL lines; on a signal, keeps the input that caused it.
report() {
    local target=$1 status log=$work/$1.log
    status=$(cat "$work/$target.status")
    if [ "$status" -eq 0 ]; then
        pass "fuzz $target: $(grep -m1 ': replayed ' "$log" | sed "s/^$target: //")"
        pass "fuzz $target: $(grep -m1 ' executions in ' "$log" | sed "s/^$target: //")"
    elif [ "$status" -gt 128 ]; then
        local signal kept
        signal=$(kill -l $((status - 128)) 2>/dev/null || echo $((status - 128)))
        mkdir -p "$crashes"
        kept=$crashes/$target-$(sha256sum "$work/$target/input" | cut -c1-16)
        cp "$work/$target/input" "$kept"
        cp "$log" "$kept.log"
        local what="killed by SIG$signal" detail
        [ "$signal" = ALRM ] && what="hang: an execution took over $timeout s"
        # The runtime's message names the trap; the Swift backtrace after it is in the kept log.
        detail=$(grep -m1 -i 'fatal error' "$log" || tail -n 3 "$log" | tr '\n' ' ')
        fail "fuzz $target" "$what; input kept in $kept (add it to Tests/Fuzz/regressions/$target/ with the fix): ${detail:0:400}"
    else
        fail "fuzz $target" "exit $status: $(tail -n 3 "$log" | tr '\n' ' ' | cut -c1-400)"
    fi
}

targets=$("$fuzz" --list) || { echo "FAIL fuzz: cannot list the targets"; exit 1; }
for target in $targets; do
    while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n; done
    run_target "$target" &
done
wait
for target in $targets; do report "$target"; done
finish
