#!/usr/bin/env bash
# The `tokenflow` command end to end on the tiny random-weight model: formats, timestamps, audio,
# inversion reuse, latents files, model installation, and bad input.
set -u
cd "$(dirname "$0")/../.."
source Tests/Host/support/check.sh
cli=$PWD/.build/release/tokenflow-cli
model=$PWD/Tests/Fixtures/models/sd2-tiny
work=$(mktemp -d /tmp/tokenflow-cli-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc -O1 -o "$work/clip_tool" Tests/Host/c/clip_tool.c -lavformat -lavcodec -lavutil -lm || { echo "FAIL cli: cannot build clip_tool"; exit 1; }
tool=$work/clip_tool
quick=(--model "$model" --steps 2 --inversion_steps 2 --size input --batch_size 4)

"$tool" make "$work/in.nut" 10 64 48 audio
expect "cli probe input" grep -q "frames=10 width=64 height=48 fps=10/1 audio=pcm_s16le" <("$tool" probe "$work/in.nut")
input_times=$("$tool" probe "$work/in.nut" | sed -n 's/^times=//p')

# mkv -> mp4 (H.264): frame count, size, rate and timestamps kept.
"$cli" edit "$work/in.nut" "$work/out.mp4" --prompt "a marble statue" "${quick[@]}" > "$work/edit.log" 2>&1
expect "cli edit exits 0" test $? -eq 0
probe=$("$tool" probe "$work/out.mp4")
expect "cli mp4 keeps count, size and rate" grep -q "frames=10 width=64 height=48 fps=10/1" <<<"$probe"
expect "cli mp4 keeps timestamps" test "$(sed -n 's/^times=//p' <<<"$probe")" = "$input_times"
expect "cli prints progress in steps" grep -q "progress: sampling step 2/2" "$work/edit.log"
expect "cli logs the CPU, the C kernels' path and the GEMMs' library (oneDNN, OpenBLAS's core behind it)" \
    grep -Eq "^running on .*: C kernels on the (avx2|avx512) path, GEMMs on oneDNN [0-9.]+, else OpenBLAS core " "$work/edit.log"

# mkv -> mkv copies the PCM audio.
"$cli" edit "$work/in.nut" "$work/out.mkv" --prompt "a marble statue" "${quick[@]}" > /dev/null 2>&1
expect "cli mkv copies audio" grep -q "audio=pcm_s16le" <("$tool" probe "$work/out.mkv")

# precision=bf16: on AMX or AVX512-BF16 the matrix products run in bf16, elsewhere in fp32; the log says which,
# and why. Where AMX is, TOKENFLOW_BF16=avx512 runs the AVX512-BF16 products instead.
"$cli" edit "$work/in.nut" "$work/bf16.mp4" --prompt "a marble statue" "${quick[@]}" --precision bf16 > "$work/bf16.log" 2>&1
expect "cli edit with precision bf16 keeps count, size and rate" \
    grep -q "frames=10 width=64 height=48 fps=10/1" <("$tool" probe "$work/bf16.mp4")
if grep -qw amx_bf16 /proc/cpuinfo; then
    expect "cli logs bf16 products on AMX" grep -q ", matrix products in bf16 on AMX$" "$work/bf16.log"
    TOKENFLOW_BF16=avx512 "$cli" edit "$work/in.nut" "$work/bf16-avx512.mp4" --prompt "a marble statue" "${quick[@]}" \
        --precision bf16 > "$work/bf16-avx512.log" 2>&1
    expect "cli logs bf16 products on AVX512-BF16 when asked" grep -q ", matrix products in bf16 on AVX512-BF16$" "$work/bf16-avx512.log"
elif grep -qw avx512_bf16 /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo; then
    expect "cli logs bf16 products on AVX512-BF16" grep -q ", matrix products in bf16 on AVX512-BF16$" "$work/bf16.log"
else
    expect "cli logs fp32 products and why (no bf16 unit)" grep -q ", matrix products in fp32 (precision bf16 needs AMX-BF16 or AVX512-BF16" "$work/bf16.log"
fi

# Image sequence output, odd size input (70x45 -> working 72x48 -> back to 70x45).
"$tool" make "$work/odd.nut" 5 70 45
mkdir -p "$work/frames"
"$cli" edit "$work/odd.nut" "$work/frames/%05d.png" --prompt "snow" "${quick[@]}" > /dev/null 2>&1
expect "cli png sequence has every frame" test "$(ls "$work/frames" | wc -l)" -eq 5
expect "cli png sequence keeps the odd size" grep -q "frames=5 width=70 height=45" <("$tool" probe "$work/frames/%05d.png")

# COVE in groups of 4 (10 frames: 4 + 3 + 3), with its correspondences saved.
"$cli" edit "$work/in.nut" "$work/cove.mp4" --prompt "a marble statue" "${quick[@]}" --method cove --cove_frames 4 \
    --save-correspondences "$work/corr.safetensors" > "$work/cove.log" 2>&1
expect "cli cove edit keeps count, size and timestamps" bash -c "
    \"$tool\" probe '$work/cove.mp4' | grep -q 'frames=10 width=64 height=48' &&
    test \"\$(\"$tool\" probe '$work/cove.mp4' | sed -n 's/^times=//p')\" = '$input_times'"
expect "cli cove saves every group's correspondences" python3 -c "
import json, struct, sys
f = open('$work/corr.safetensors', 'rb'); header = json.loads(f.read(struct.unpack('<Q', f.read(8))[0]))
shapes = {name: entry['shape'] for name, entry in header.items() if name != '__metadata__'}
expected = {'group0.positions': [4, 48, 4, 3], 'group0.frames': [4], 'group1.positions': [4, 48, 4, 3], 'group1.frames': [4],
            'group2.positions': [4, 48, 4, 3], 'group2.frames': [4]}
sys.exit(0 if shapes == expected and header['group1.positions']['dtype'] == 'I32' else 1)"

# Invert once, edit twice from the cache: same frames as a direct edit with the same settings.
"$cli" invert "$work/in.nut" "$work/inv.safetensors" "${quick[@]}" > /dev/null 2>&1
expect "cli invert writes the cache" test -s "$work/inv.safetensors"
mkdir -p "$work/direct" "$work/cached"
"$cli" edit "$work/in.nut" "$work/direct/%03d.png" --prompt "lava" "${quick[@]}" --save-latents "$work/direct.safetensors" > /dev/null 2>&1
"$cli" edit "$work/in.nut" "$work/cached/%03d.png" --prompt "lava" "${quick[@]}" --inversion "$work/inv.safetensors" > /dev/null 2>&1
expect "cli edit from the inversion cache equals a direct edit" diff -r "$work/direct" "$work/cached"
expect "cli --save-latents has final and inverted/<t>" bash -c "head -c 4096 '$work/direct.safetensors' | grep -aq '\"final\"' && head -c 4096 '$work/direct.safetensors' | grep -aq 'inverted/'"
# The final latents of an edit's --save-latents file equal the direct edit's up to the GEMM libraries' rounding
# (within 1e-4 of their scale).
final_latents_match() {
    python3 -c "
import array, json, struct, sys
def final(path):
    data = open(path, 'rb').read()
    size = struct.unpack('<Q', data[:8])[0]
    start, end = json.loads(data[8:8 + size])['final']['data_offsets']
    return array.array('f', data[8 + size + start:8 + size + end])
a, b = final('$work/direct.safetensors'), final('$1')
error = max(abs(x - y) for x, y in zip(a, b)) / max(abs(x) for x in a) if a and len(a) == len(b) else 1
print('$1 vs direct: relative max error', error)
sys.exit(0 if error <= 1e-4 else 1)"
}
# oneDNN refusing every product (as when it cannot allocate its working buffers): OpenBLAS computes them.
cc -O1 -shared -fPIC -o "$work/dnnl_refuses.so" Tests/Host/c/dnnl_refuses.c
mkdir -p "$work/refused"
LD_PRELOAD="$work/dnnl_refuses.so" "$cli" edit "$work/in.nut" "$work/refused/%03d.png" --prompt "lava" "${quick[@]}" \
    --save-latents "$work/refused.safetensors" > "$work/refused.log" 2>&1
expect "cli edit with oneDNN refusing every product exits 0" test $? -eq 0
expect "cli edit with oneDNN refusing: the products went through the stand-in" grep -Eq "^dnnl_refuses: refused [1-9][0-9]* products" "$work/refused.log"
expect "cli edit with oneDNN refusing every product equals the direct edit up to rounding" final_latents_match "$work/refused.safetensors"
# A host that forbids executable memory (SELinux deny_execmem): oneDNN cannot generate its kernels, and
# OpenBLAS computes the products.
cc -O1 -shared -fPIC -o "$work/no_exec_memory.so" Tests/Host/c/no_exec_memory.c -ldl
LD_PRELOAD="$work/no_exec_memory.so" "$cli" edit "$work/in.nut" "$work/noexec.mp4" --prompt "lava" "${quick[@]}" \
    --save-latents "$work/noexec.safetensors" > "$work/noexec.log" 2>&1
expect "cli edit without executable memory exits 0" test $? -eq 0
expect "cli edit without executable memory: oneDNN asked for it and was refused" grep -Eq "^no_exec_memory: refused [1-9][0-9]* executable mappings" "$work/noexec.log"
expect "cli edit without executable memory equals the direct edit up to rounding" final_latents_match "$work/noexec.safetensors"

# An explicit keyframe schedule (2 steps x 3 batches of 4, 4, 2 frames).
echo '[[0, 4, 8], [3, 7, 9]]' > "$work/keys.json"
"$cli" edit "$work/in.nut" "$work/keys.mp4" --prompt "lava" "${quick[@]}" --keyframes "$work/keys.json" > /dev/null 2>&1
expect "cli --keyframes runs" test -s "$work/keys.mp4"
echo '[[0, 4, 8]]' > "$work/short-keys.json"
"$cli" edit "$work/in.nut" "$work/bad-keys.mp4" --prompt "lava" "${quick[@]}" --keyframes "$work/short-keys.json" > "$work/err.log" 2>&1
expect "cli rejects a keyframe schedule of the wrong length" grep -q "keyframe schedule has 1 steps, expected 2" "$work/err.log"

# Models: info, install-model, TOKENFLOW_MODEL.
"$cli" info "$model" > "$work/info.log" 2>&1
expect "cli info describes the model" grep -q "unet: block_out_channels \[8, 16, 16, 16\]" "$work/info.log"
expect "cli info counts parameters" grep -q "unet/diffusion_pytorch_model.safetensors: .* parameters (F32)" "$work/info.log"
expect "cli info names the CPU, the kernels, the GEMMs' library and OpenBLAS's core" \
    bash -c "grep -q '^CPU: .*AVX2, FMA, F16C' '$work/info.log' && grep -Eq '^kernels: Swift built for any x86-64; C kernels on the (avx2|avx512) path' '$work/info.log' && grep -q '^GEMM: oneDNN [0-9.]* for float32 products' '$work/info.log' && grep -q '^OpenBLAS: .*, core ' '$work/info.log'"
# OpenBLAS picks its kernels by CPU model and falls back to old ones (Prescott's, or Opteron's for QEMU's
# "max") for a model it does not know: the library then chooses by the CPU's features. An emulated CPU
# OpenBLAS does not know (QEMU's "max", AVX2 without AVX-512) gets Haswell's; a known one (an emulated
# Haswell) keeps OpenBLAS's choice, and so does a user's OPENBLAS_CORETYPE.
timeout 300 qemu-x86_64 -cpu max "$cli" info "$model" > "$work/info-max.log" 2>&1
expect "cli info: OpenBLAS's fallback core on an unknown CPU is replaced by the features' choice" \
    grep -Eq "^OpenBLAS: .*core Haswell \(chosen by this library from the CPU's features, instead of OpenBLAS's [A-Za-z]+\)$" "$work/info-max.log"
timeout 300 qemu-x86_64 -cpu Haswell "$cli" info "$model" > "$work/info-haswell.log" 2>&1
expect "cli info: OpenBLAS's own choice for a CPU it knows stands" \
    bash -c "grep -q '^OpenBLAS: .*core Haswell$' '$work/info-haswell.log'"
# The C kernels' path follows the CPU too (AVX2 without AVX-512 on both emulated CPUs), and TOKENFLOW_KERNELS
# picks a lower one.
expect "cli info: the C kernels take the AVX2 path on a CPU without AVX-512" \
    bash -c "grep -q 'C kernels on the avx2 path' '$work/info-max.log' && grep -q 'C kernels on the avx2 path' '$work/info-haswell.log'"
TOKENFLOW_KERNELS=portable "$cli" info "$model" > "$work/info-portable.log" 2>&1
expect "cli info: TOKENFLOW_KERNELS=portable forces the portable path" grep -q "C kernels on the portable path" "$work/info-portable.log"
OPENBLAS_CORETYPE=Prescott "$cli" info "$model" > "$work/info-user.log" 2>&1
expect "cli info: a user's OPENBLAS_CORETYPE stands" grep -q "^OpenBLAS: .*core Prescott$" "$work/info-user.log"
"$cli" install-model "$model" --destination "$work/share/model" > /dev/null 2>&1
expect "cli install-model copies a valid model" test -f "$work/share/model/unet/config.json"
TOKENFLOW_MODEL="$work/share/model" "$cli" edit "$work/in.nut" "$work/env.mp4" --prompt x --steps 2 --inversion-steps 2 --size=input > /dev/null 2>&1
expect "cli uses TOKENFLOW_MODEL" test -s "$work/env.mp4"

# Single-file checkpoints (original layout): recognised, edited exactly as the folder, converted to a folder.
checkpoint=$PWD/Tests/Fixtures/models/sd15-tiny.safetensors
"$cli" info "$checkpoint" > "$work/info-file.log" 2>&1
expect "cli info recognises a single-file checkpoint" grep -q "format: single-file checkpoint (original layout), Stable Diffusion 1.x" "$work/info-file.log"
expect "cli info counts a checkpoint's parameters" grep -q "^unet: .* parameters (F16)" "$work/info-file.log"
mkdir -p "$work/from-folder" "$work/from-file" "$work/from-converted"
"$cli" edit "$work/in.nut" "$work/from-folder/%03d.png" --prompt "lava" "${quick[@]}" --model "${model%sd2-tiny}sd15-tiny" > /dev/null 2>&1
"$cli" edit "$work/in.nut" "$work/from-file/%03d.png" --prompt "lava" "${quick[@]}" --model "$checkpoint" > /dev/null 2>&1
expect "cli edit from a single file writes every frame" test "$(ls "$work/from-file" | wc -l)" -eq 10
expect "cli edit from a single file equals the folder's edit" diff -r "$work/from-folder" "$work/from-file"
"$cli" convert "$model.safetensors" "$work/converted" --prediction epsilon > /dev/null 2>&1
expect "cli convert writes a diffusers folder" test -f "$work/converted/unet/diffusion_pytorch_model.safetensors" -a -f "$work/converted/tokenizer/vocab.json"
"$cli" edit "$work/in.nut" "$work/from-converted/%03d.png" --prompt "lava" "${quick[@]}" --model "$work/converted" > /dev/null 2>&1
# $work/direct holds the folder's edit with these settings (the inversion-cache check above).
expect "cli edit from a converted folder equals the original folder's edit" diff -r "$work/direct" "$work/from-converted"

# Bad input: clear message, non-zero exit, no output file.
bad() { # NAME EXPECTED-MESSAGE ARGS...
    local name=$1 message=$2; shift 2
    rm -f "$work/bad.mp4"
    "$cli" "$@" > "$work/err.log" 2>&1; local status=$?
    if [ $status -ne 0 ] && grep -q -- "$message" "$work/err.log" && [ ! -e "$work/bad.mp4" ]; then pass "$name"
    else fail "$name" "exit $status, output: $(head -c 300 "$work/err.log")"; fi
}
bad "cli missing model" "missing model file" edit "$work/in.nut" "$work/bad.mp4" --prompt x --model "$work/nope"
bad "cli steps 0" "steps: '0' is not allowed: expected an integer from 1 to 1000" edit "$work/in.nut" "$work/bad.mp4" --prompt x --model "$model" --steps 0
bad "cli threshold out of range" "pnp_attn_t: '2' is not allowed: expected a number from 0 to 1" edit "$work/in.nut" "$work/bad.mp4" --prompt x --model "$model" --pnp-attn-t 2
bad "cli unknown method" "method: 'bogus' is not allowed: expected one of tokenflow, sdedit, reconstruct, cove" edit "$work/in.nut" "$work/bad.mp4" --prompt x --model "$model" --method bogus
bad "cli missing input" "cannot open input" edit "$work/none.nut" "$work/bad.mp4" --prompt x "${quick[@]}"
bad "cli bad size" "size: '12x12' is not allowed: expected WxH (multiples of 8" edit "$work/in.nut" "$work/bad.mp4" --prompt x --model "$model" --size 12x12
bad "cli unknown setting" "unknown option '--stepz'" edit "$work/in.nut" "$work/bad.mp4" --prompt x --model "$model" --stepz 2
bad "cli setting without a value" "--steps needs a value" edit "$work/in.nut" "$work/bad.mp4" --prompt x --model "$model" --steps
bad "cli no model anywhere" "no model given" edit "$work/in.nut" "$work/bad.mp4" --prompt x
bad "cli correspondences are for cove" "--save-correspondences is for method cove, not tokenflow" \
    edit "$work/in.nut" "$work/bad.mp4" --prompt x "${quick[@]}" --save-correspondences "$work/bad-corr.safetensors"
bad "cli cove_merge above 0.5" "cove_merge: '0.7' is not allowed: expected a number from 0 to 0.5" \
    edit "$work/in.nut" "$work/bad.mp4" --prompt x "${quick[@]}" --method cove --cove_merge 0.7
bad "cli SD 2.x single file needs a prediction" "set prediction to epsilon .* or v" edit "$work/in.nut" "$work/bad.mp4" --prompt x "${quick[@]}" --model "$model.safetensors"
bad "cli convert of an SD 2.x file needs a prediction" "pass --prediction epsilon" convert "$model.safetensors" "$work/bad-convert"
printf 'not a pickle' > "$work/model.ckpt"
bad "cli refuses pickles" "never opens pickles" edit "$work/in.nut" "$work/bad.mp4" --prompt x "${quick[@]}" --model "$work/model.ckpt"
bad "cli edit beyond memory_limit" "out of memory: a tensor of shape .* would exceed the memory_limit of 1 MiB" \
    edit "$work/in.nut" "$work/bad.mp4" --prompt x "${quick[@]}" --size 256x256 --memory_limit 1
(ulimit -v 1500000; bad "cli edit under ulimit -v" "out of memory: the system refused" \
    edit "$work/in.nut" "$work/bad.mp4" --prompt x "${quick[@]}" --size 16384x16384)
cp -rL "$model" "$work/corrupt"; truncate -s 100 "$work/corrupt/unet/diffusion_pytorch_model.safetensors"
bad "cli corrupt weights" "diffusion_pytorch_model.safetensors" edit "$work/in.nut" "$work/bad.mp4" --prompt x --model "$work/corrupt"
# An older CPU (emulated: a Nehalem has no AVX, a Sandy Bridge AVX only, a Haswell without FMA): the engine
# runs there too, on the portable path, with OpenBLAS kernels the CPU has (never SIGILL; on the Haswell
# without FMA, OpenBLAS's own choice by model number would be its FMA kernels). Under emulation, so on a
# short clip at the smallest settings, to PNG frames (libx264 itself uses FMA on that Haswell).
"$tool" make "$work/short.nut" 2 64 48
for cpu in Nehalem:Nehalem SandyBridge:Sandybridge Haswell,-fma:Sandybridge; do
    core=${cpu#*:} cpu=${cpu%:*}
    emulated=(timeout 600 qemu-x86_64 -cpu "$cpu" "$cli")
    "${emulated[@]}" info "$model" > "$work/info-$cpu.log" 2>&1
    expect "cli on $cpu: info exits 0" test $? -eq 0
    expect "cli on $cpu: info reports the portable path and OpenBLAS's $core kernels" \
        bash -c "grep -q '^kernels: Swift built for any x86-64; C kernels on the portable path (this CPU runs portable)' '$work/info-$cpu.log' && grep -q '^GEMM: OpenBLAS (oneDNN' '$work/info-$cpu.log' && grep -q '^OpenBLAS: .*, core $core' '$work/info-$cpu.log'"
    mkdir -p "$work/old-$cpu"
    "${emulated[@]}" edit "$work/short.nut" "$work/old-$cpu/%03d.png" --prompt "a marble statue" "${quick[@]}" > "$work/edit-$cpu.log" 2>&1
    expect "cli on $cpu: a tiny edit exits 0" test $? -eq 0
    expect "cli on $cpu: the edit writes every frame" test "$(ls "$work/old-$cpu" | wc -l)" -eq 2
    expect "cli on $cpu: the edit logs the portable path" grep -q "C kernels on the portable path, GEMMs on OpenBLAS core $core" "$work/edit-$cpu.log"
done
finish
