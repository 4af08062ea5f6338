#!/usr/bin/env bash
# Benchmark (not a test): one whole TokenFlow-PnP edit (8 frames of 256x160, 4 inversion + 4 sampling steps, batch 8,
# guidance 7.5, pnp_attn_t 0.5, pnp_f_t 0.8, fp32) by our `tokenflow edit` and by the reference implementation
# (omerbt/TokenFlow, driven by scripts/bench_tokenflow_reference.py) on the same decoded frames, in the same run.
# Each side is one process timed by /usr/bin/time (wall seconds, peak RSS), model loading included; the sides
# alternate for a few rounds and the figures are the medians of the rounds' ratios (scripts/lib.sh: bench_rounds).
#   scripts/bench_tokenflow.sh [MODEL_DIR [THREADS [PRECISION]]]
#     MODEL_DIR: a diffusers folder (default /tmp/tokenflow-sd21/folder, written by scripts/make_full_size_model.py
#     if missing); THREADS: both sides (default 2); PRECISION: ours (fp32 by default; the reference runs fp32).
#     With bf16, ours also runs in fp32 and the PSNR of the bf16 frames against the fp32 ones is printed. TOKENFLOW_REFERENCE: the reference's *.py files (default
#     /tmp/tokenflow-ref); TOKENFLOW_BUILD: a folder with a release tokenflow-cli (default: build .build/release);
#     TOKENFLOW_TORCH_PYTHON: python with the pinned tools (default venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/tokenflow-sd21/folder}
threads=${2:-2}
precision=${3:-fp32}
python=${TOKENFLOW_TORCH_PYTHON:-venv/bin/python}
reference=${TOKENFLOW_REFERENCE:-/tmp/tokenflow-ref}
frames=8 size=256x160 steps=4
die() { echo "bench_tokenflow: $*" >&2; exit 1; }
[ -x "$python" ] || die "no PyTorch venv at $python (python3 -m venv venv && venv/bin/pip install -r Tests/Fixtures/requirements.txt)"
[ -f "$reference/run_tokenflow_pnp.py" ] || die "no reference at $reference: mkdir -p $reference && git -C <clone of \
https://github.com/omerbt/TokenFlow> archive HEAD -- '*.py' | tar -x -C $reference (never commit it; Tests/Fixtures/README.md)"
if [ ! -f "$dir/model_index.json" ]; then
    [ "$(basename "$dir")" = folder ] || die "no diffusers model at $dir"
    "$python" scripts/make_full_size_model.py "$(dirname "$dir")"
fi
if [ -n "${TOKENFLOW_BUILD:-}" ]; then build=$TOKENFLOW_BUILD; else
    swift build -c release --product tokenflow-cli >/dev/null
    build=.build/release
fi
work=$(mktemp -d /tmp/tokenflow-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc -O1 -o "$work/clip_tool" Tests/Host/c/clip_tool.c -lavformat -lavcodec -lavutil -lm
"$work/clip_tool" make "$work/clip.nut" "$frames" "${size%x*}" "${size#*x}"        # lossless RGB24, moving pattern
"$work/clip_tool" probe "$work/clip.nut" "$work/clip.rgb" >/dev/null               # its decoded frames, for the reference
prompts=(--prompt "a marble sculpture" --negative_prompt "ugly, blurry" --inversion_prompt "a colorful video")  # the reference driver's
cpu="$("$build/tokenflow-cli" info "$dir" | sed -n 's/^CPU: //p') $(awk -F': ' '/^cpu family/ { f = $2 } /^model\t/ { m = $2 }
    END { printf "family %s model %s", f, m }' /proc/cpuinfo)"
echo "# TokenFlow-PnP, $frames frames $size, $steps+$steps steps, threads $threads, ours in $precision, model $dir; CPU: $cpu; load average $(cut -d' ' -f1-3 /proc/loadavg)"
run() {  # NAME COMMAND...: prints "NAME wall=S rss_mib=M"
    local name=$1; shift
    /usr/bin/time -f '%e %M' -o "$work/$name.time" "$@" >"$work/$name.log" 2>&1 || { tail -n 20 "$work/$name.log" >&2; die "$name failed"; }
    read -r wall rss <"$work/$name.time"
    printf '%s wall=%.1f s peak_rss=%d MiB\n' "$name" "$wall" $((rss / 1024))
    eval "${name}_wall=$wall ${name}_rss=$rss"
}
edit() {  # NAME PRECISION: our edit into $work/NAME/
    rm -rf "${work:?}/$1"; mkdir "$work/$1"
    run "$1" "$build/tokenflow-cli" edit "$work/clip.nut" "$work/$1/%03d.png" --model "$dir" "${prompts[@]}" --method tokenflow \
        --steps "$steps" --inversion_steps "$steps" --size "$size" --batch_size 8 --guidance 7.5 --pnp_attn_t 0.5 --pnp_f_t 0.8 \
        --threads "$threads" --precision "$2"
    grep '^running on' "$work/$1.log" | sed 's/^/# /'
}
source scripts/lib.sh
wall_ratios=() rss_ratios=()
rounds=$(bench_rounds)
for round in $(seq "$rounds"); do
    echo "# round $round"
    edit ours "$precision"
    run reference "$python" scripts/bench_tokenflow_reference.py --reference "$reference" --model "$dir" --frames "$work/clip.rgb" \
        --size "$size" --steps "$steps" --inversion-steps "$steps" --threads "$threads"
    grep '^reference_pnp_edit' "$work/reference.log" | sed 's/^/# /'
    wall_ratios+=("$(awk -v o="$ours_wall" -v r="$reference_wall" 'BEGIN { printf "%.2f", o / r }')")
    rss_ratios+=("$(awk -v o="$ours_rss" -v r="$reference_rss" 'BEGIN { printf "%.2f", o / r }')")
done
median_of "ratio ours/reference wall" "${wall_ratios[@]}"
median_of "ratio ours/reference rss" "${rss_ratios[@]}"
if [ "$precision" != fp32 ]; then
    edit fp32 fp32
    "$python" - "$work/ours" "$work/fp32" <<'PY'
import sys, pathlib
import numpy as np
from PIL import Image
ours, fp32 = (sorted(pathlib.Path(d).glob("*.png")) for d in sys.argv[1:3])
errors = [np.mean((np.asarray(Image.open(a), float) - np.asarray(Image.open(b), float)) ** 2) for a, b in zip(ours, fp32)]
print("psnr of ours against ours in fp32 (dB, per frame): " + " ".join(f"{10 * np.log10(255 ** 2 / max(e, 1e-12)):.1f}" for e in errors))
PY
fi
