#!/usr/bin/env bash
# Benchmark (not a test): one SD2.1-base UNet forward at 64x64 latent, batch 1 and 3, in Swift and in
# PyTorch (diffusers) on the same machine in the same run, with the ratio. The full-size UNet has random
# weights, generated on demand by scripts/make_full_size_unet.py (3.5 GB, never committed).
#   scripts/bench_unet.sh [MODEL_DIR [THREADS [PRECISION]]]   (default /tmp/tokenflow-sd21-unet, 2 threads, fp32;
#                                                 needs venv/ with the pinned tools)
# PRECISION bf16 runs the Swift side with precision=bf16 and PyTorch both in fp32 (the baseline) and under
# bf16 autocast, with a ratio for each. Each side is timed once per round (after a warm-up run), the sides
# alternating; the figure is the median of the rounds' ratios (scripts/lib.sh: bench_rounds).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/tokenflow-sd21-unet}
threads=${2:-2}
precision=${3:-fp32}
torch_precisions=$(sort -u <<<"fp32
$precision" | tr '\n' ' ')
python=${TOKENFLOW_TORCH_PYTHON:-venv/bin/python}
[ -x "$python" ] || { echo "bench_unet: no PyTorch venv at $python (python3 -m venv venv && venv/bin/pip install -r Tests/Fixtures/requirements.txt)" >&2; exit 1; }
[ -f "$dir/unet/diffusion_pytorch_model.safetensors" ] || "$python" scripts/make_full_size_unet.py "$dir"
swift build -c release --product tokenflow-bench >/dev/null
source scripts/lib.sh
declare -A ratios
rounds=$(bench_rounds)
for round in $(seq "$rounds"); do
    # shellcheck disable=SC2086 # one argument per precision
    torch_lines=$("$python" scripts/make_full_size_unet.py "$dir" --no-save --time 1 --threads "$threads" --precision $torch_precisions | grep '^pytorch_unet_forward')
    for batch in 1 3; do
        swift_line=$(.build/release/tokenflow-bench unet "$dir" --batch "$batch" --repeats 1 --threads "$threads" --precision "$precision" | grep '^swift_unet_forward')
        echo "round $round: $swift_line"
        for torch_precision in $torch_precisions; do
            torch_line=$(grep "batch=$batch precision=$torch_precision " <<<"$torch_lines")
            echo "round $round: $torch_line"
            key="unet_forward batch=$batch swift($precision)/pytorch($torch_precision)"
            ratios[$key]+=" $(awk -v s="${swift_line#*seconds=}" -v t="${torch_line#*seconds=}" 'BEGIN { printf "%.2f", (s + 0) / (t + 0) }')"
        done
    done
done
for key in "${!ratios[@]}"; do
    # shellcheck disable=SC2086 # one argument per round
    median_of "$key" ${ratios[$key]}
done | sort
