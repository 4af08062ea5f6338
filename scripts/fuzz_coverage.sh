#!/usr/bin/env bash
# Line coverage of the parsers by the fuzzing corpora: builds tokenflow-fuzz with coverage instrumentation
# into .build-coverage, replays every target's seeds, regressions and libFuzzer campaign corpus
# (.build/fuzz/corpus/<target>/, left by scripts/fuzz_campaign.sh), and prints llvm-cov's report for the
# parser files. Uses the toolchain's llvm-profdata and llvm-cov (no other package).
#
#   scripts/fuzz_coverage.sh [TARGET...]     (default: every target)
set -uo pipefail
cd "$(dirname "$0")/.."

# The files that parse or check a user's input files.
files=(
    Sources/Tensors/Safetensors.swift
    Sources/Diffusion/Configs.swift Sources/Diffusion/ConfigValidation.swift Sources/Diffusion/WeightStore.swift
    Sources/Diffusion/JSONFile.swift Sources/Diffusion/CLIPTokenizer.swift Sources/Diffusion/DDIMScheduler.swift
    Sources/VideoEditing/Pipeline/InversionFile.swift Sources/VideoEditing/Pipeline/KeyframeFile.swift
    Sources/Diffusion/SingleFileCheckpoint.swift Sources/Diffusion/LDMLayout.swift
)
toolchain=$(dirname "$(readlink -f "$(command -v swift)")")

swift build -c release --scratch-path .build-coverage --product tokenflow-fuzz \
    -Xswiftc -profile-generate -Xswiftc -profile-coverage-mapping || exit 1
fuzz=$PWD/.build-coverage/release/tokenflow-fuzz
profiles=$(mktemp -d /tmp/tokenflow-fuzz-coverage.XXXXXX)
trap 'rm -rf "$profiles"' EXIT
# Listing runs no parser: its profile is not counted.
[ $# -gt 0 ] && targets=("$@") || mapfile -t targets < <(LLVM_PROFILE_FILE=/dev/null "$fuzz" --list)
for target in "${targets[@]}"; do
    mapfile -t inputs < <(LLVM_PROFILE_FILE=/dev/null "$fuzz" --target "$target" --work "$profiles/work" --corpus)
    [ -d .build/fuzz/corpus/"$target" ] && inputs+=(.build/fuzz/corpus/"$target"/*)
    [ -d .build/fuzz/corpus/"$target" ] || echo "fuzz_coverage: no campaign corpus for $target (run scripts/fuzz_campaign.sh)"
    # In chunks: a corpus can hold more files than one command line takes.
    printf '%s\0' "${inputs[@]}" | LLVM_PROFILE_FILE="$profiles/$target-%p.profraw" \
        xargs -0 -r -n 2000 "$fuzz" --target "$target" --work "$profiles/work" --replay | grep -v '^replay ' | grep -v 'input file'
done
"$toolchain/llvm-profdata" merge -o "$profiles/all.profdata" "$profiles"/*.profraw || exit 1
"$toolchain/llvm-cov" report "$fuzz" -instr-profile "$profiles/all.profdata" "${files[@]}"
# Lines never run, per file, to see what the corpora miss: TOKENFLOW_FUZZ_COVERAGE_SHOW=1.
if [ -n "${TOKENFLOW_FUZZ_COVERAGE_SHOW:-}" ]; then
    "$toolchain/llvm-cov" show "$fuzz" -instr-profile "$profiles/all.profdata" "${files[@]}" | grep -E '^\S|^ +[0-9]+\| +0\|'
fi
