"""Reference outputs of the tiny UNets under precision=bf16: diffusers' UNet2DConditionModel with the operands
of every linear and convolution layer, and of attention's two products, rounded to bfloat16, products summed in
float32.

Usage (from the repository root, with the pinned venv of Tests/Fixtures/requirements.txt):

    venv/bin/python Tests/Fixtures/generate_bf16_fixtures.py --out Tests/Fixtures/expected

Writes expected/bf16-sd2-tiny.safetensors and expected/bf16-sd15-tiny.safetensors, each holding, for t in
1, 500, 981:
    "unet.t{t}.out"                  the UNet on the inputs of expected/<model>.safetensors ("unet.sample",
                                     "unet.encoder_hidden_states", written by generate_sd_fixtures.py)
    "unet.t{t}.rounding_noise_rms"   how far that output moves (rms, relative to the output's rms) when every
                                     linear and convolution input is moved by ~1e-7 of itself (about one
                                     float32 ulp) before it is rounded: the largest over 4 seeds.
The second is the tolerance such a reference supports. Any other float32 implementation sums in another
order, so its activations differ from torch's by about an ulp, and now and then one rounds to the
neighbouring bfloat16 (2^-8 away); on these tiny random networks that moves the output by ~0.5% rms, as much
as other rounding differences of the whole network would.

That is the engine's definition of bf16 (Tensors/GEMM.swift, ComputePrecision): the input and the weight of
F.linear and F.conv2d are rounded to bfloat16 (torch's float32 -> bfloat16 conversion, round to nearest even)
and multiplied in float32; in attention, the queries, keys and values are rounded, the scores and the softmax
are float32, and the softmax weights of each block of 64 keys of the online softmax are rounded before they
multiply the values (`bfloat16_attention`). Biases, normalisation and activations stay float32. It is not torch.autocast, which also stores the layers' outputs in bfloat16. At the
fixtures' 16x8 latent every 3x3 convolution has fewer than 256 output tiles, so the engine computes them by
im2col, whose products are exactly these rounded operands' (Winograd would round transformed values instead).

Deterministic: no random numbers are drawn; re-running it with the pins rewrites byte-identical files.
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

MODELS = {"sd2-tiny": None, "sd15-tiny": "fp16"}  # name: diffusers weight variant
TIMESTEPS = [1, 500, 981]


NOISE_SEEDS = 4
perturbation = 0.0  # relative noise added to every linear/convolution input before rounding (noise runs only)


def bfloat16_operands(function):
    """`function(input, weight, bias, ...)` with input and weight rounded to bfloat16, computed in float32."""
    def rounded(input, weight, bias=None, *args, **kwargs):
        if perturbation:
            input = input * (1 + perturbation * torch.randn_like(input))
        return function(input.bfloat16().float(), weight.bfloat16().float(), bias, *args, **kwargs)
    return rounded


KEY_BLOCK = 64  # keys per block of the engine's online softmax (CKernels/amx_bf16.c, KEY_STEP)


def bfloat16_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """F.scaled_dot_product_attention as the engine computes it in bf16 (diffusers' UNet passes no mask): an
    online softmax over blocks of 64 keys, each block's weights exp(s - running max) rounded to bfloat16 before
    they multiply the rounded values; the running sum, the rescaling and the output stay float32."""
    assert attn_mask is None and dropout_p == 0.0 and not is_causal
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    round_ = lambda x: x.bfloat16().float()
    query, key, value = round_(query), round_(key), round_(value)
    running_max = torch.full(query.shape[:-1] + (1,), float("-inf"))
    total = torch.zeros_like(running_max)
    out = torch.zeros(query.shape[:-1] + (value.shape[-1],))
    for first in range(0, key.shape[-2], KEY_BLOCK):
        scores = query @ key[..., first:first + KEY_BLOCK, :].transpose(-2, -1) * scale
        new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))
        correction, weights = torch.exp(running_max - new_max), torch.exp(scores - new_max)
        total = total * correction + weights.sum(dim=-1, keepdim=True)
        out = out * correction + round_(weights) @ value[..., first:first + KEY_BLOCK, :]
        running_max = new_max
    return out / total


def relative_rms(a, b):
    return ((a - b).pow(2).sum() / b.pow(2).sum()).sqrt()


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "expected"))
    args = ap.parse_args()
    global perturbation
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    # nn.Linear, nn.Conv2d and diffusers' attention processor call these module functions at each forward, so
    # patching them covers every layer.
    F.linear, F.conv2d = bfloat16_operands(F.linear), bfloat16_operands(F.conv2d)
    F.scaled_dot_product_attention = bfloat16_attention
    for name, variant in MODELS.items():
        unet = UNet2DConditionModel.from_pretrained(os.path.join(here, "models", name), subfolder="unet",
                                                    torch_dtype=torch.float32, variant=variant).eval()
        inputs = load_file(os.path.join(here, "expected", f"{name}.safetensors"))
        sample, context = inputs["unet.sample"], inputs["unet.encoder_hidden_states"]
        expected = {}
        for t in TIMESTEPS:
            perturbation = 0.0
            out = unet(sample, t, encoder_hidden_states=context).sample.contiguous()
            noise = 0.0
            perturbation = 1e-7
            for seed in range(NOISE_SEEDS):
                torch.manual_seed(seed)
                noise = max(noise, relative_rms(unet(sample, t, encoder_hidden_states=context).sample, out).item())
            expected[f"unet.t{t}.out"] = out
            expected[f"unet.t{t}.rounding_noise_rms"] = torch.tensor([noise])
            fp32 = inputs[f"unet.t{t}.out"]
            print(f"{name} t={t}: bf16 operands move the output from fp32's by {relative_rms(out, fp32).item():.2e} rms; "
                  f"rounding noise {noise:.2e} rms")
        info = {"generator": "Tests/Fixtures/generate_bf16_fixtures.py", "model": f"models/{name}",
                "inputs": f"expected/{name}.safetensors", "torch": torch.__version__.split("+")[0],
                "diffusers": __import__("diffusers").__version__}
        save_file(expected, os.path.join(args.out, f"bf16-{name}.safetensors"), metadata={"info": json.dumps(info, sort_keys=True)})


if __name__ == "__main__":
    main()
