#!/usr/bin/env bash
# Benchmark (not a test): the VAE's encode and decode of one 512x512 image (or --size WxH) in Swift and in
# PyTorch (diffusers) on the same machine in the same run, with the ratios. The model folder is the full-size
# random-weight one of scripts/make_full_size_model.py (never committed); only its vae/ is read.
#   scripts/bench_vae.sh MODEL_DIR [THREADS [WxH [PRECISION]]]   (2 threads, 512x512, fp32 by default; PRECISION
#   is the Swift side's, PyTorch runs fp32; needs venv/ with the pinned tools, or TOKENFLOW_TORCH_PYTHON)
# Each side is timed once per round (after a warm-up run), the sides alternating; the figures are the medians of the
# rounds' ratios (scripts/lib.sh: bench_rounds).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: scripts/bench_vae.sh MODEL_DIR [THREADS [WxH [PRECISION]]]}
threads=${2:-2}
size=${3:-512x512}
precision=${4:-fp32}
python=${TOKENFLOW_TORCH_PYTHON:-venv/bin/python}
[ -x "$python" ] || { echo "bench_vae: no PyTorch venv at $python (python3 -m venv venv && venv/bin/pip install -r Tests/Fixtures/requirements.txt)" >&2; exit 1; }
swift build -c release --product tokenflow-bench >/dev/null
source scripts/lib.sh
encode_ratios=() decode_ratios=()
rounds=$(bench_rounds)
for round in $(seq "$rounds"); do
    swift_line=$(.build/release/tokenflow-bench vae "$dir" --size "$size" --repeats 1 --threads "$threads" --precision "$precision" | grep '^swift_vae')
    torch_line=$("$python" scripts/bench_vae_torch.py "$dir" --size "$size" --repeats 1 --threads "$threads" | grep '^pytorch_vae')
    echo "round $round: $swift_line"
    echo "round $round: $torch_line"
    for stage in encode decode; do
        ratio=$(awk -v s="$swift_line" -v t="$torch_line" -v stage="$stage" 'BEGIN {
            match(s, stage "_seconds=[0-9.]+"); sv = substr(s, RSTART + length(stage) + 9, RLENGTH - length(stage) - 9)
            match(t, stage "_seconds=[0-9.]+"); tv = substr(t, RSTART + length(stage) + 9, RLENGTH - length(stage) - 9)
            printf "%.2f", sv / tv }')
        if [ "$stage" = encode ]; then encode_ratios+=("$ratio"); else decode_ratios+=("$ratio"); fi
    done
done
median_of "vae_encode swift/pytorch" "${encode_ratios[@]}"
median_of "vae_decode swift/pytorch" "${decode_ratios[@]}"
