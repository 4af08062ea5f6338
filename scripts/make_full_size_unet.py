"""Build a full-size SD2.1-base UNet with random weights, save it, and optionally time PyTorch on it.

Usage (pinned venv of Tests/Fixtures/requirements.txt):

    venv/bin/python scripts/make_full_size_unet.py DIR [--time N] [--seed S] [--no-save] [--threads T]

Writes DIR/unet/config.json and DIR/unet/diffusion_pytorch_model.safetensors (F32, ~3.5 GB, 865M
parameters): a UNet2DConditionModel with exactly the architecture of stabilityai/stable-diffusion-2-1-base
(the real weights cannot be downloaded here). It is for benchmarks of the Swift UNet (load time, forward
time, memory), never for correctness tests, and must never be committed.

With --time N, also times diffusers' forward pass on CPU as the baseline the Swift engine is compared
with: fp32, torch.no_grad(), torch.set_num_threads(2) (--threads), 64x64 latent (512x512 image), 77 text tokens,
batch 1 and batch 3 (TokenFlow runs source/uncond/cond branches stacked), one warm-up run, then the median
of N runs. Prints one machine-readable line per batch size:

    pytorch_unet_forward batch=1 seconds=4.210

Needs about 4 GB of RAM for the weights plus a few GB of activations at batch 3.
"""
import argparse
import os
import statistics
import time

import torch
from diffusers import UNet2DConditionModel

# stabilityai/stable-diffusion-2-1-base, unet/config.json (written out from that file; keys it does not
# have take diffusers 0.31's defaults, which reproduce the same architecture).
SD21_BASE_UNET_CONFIG = dict(
    act_fn="silu",
    attention_head_dim=[5, 10, 20, 20],  # number of heads per level (head dim 64)
    block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False,
    cross_attention_dim=1024,  # OpenCLIP ViT-H text width
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1,
    dual_cross_attention=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
    norm_num_groups=32,
    num_class_embeds=None,
    only_cross_attention=False,
    out_channels=4,
    sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    upcast_attention=False,
    use_linear_projection=True,
)


@torch.no_grad()
def time_forward(unet, batch, runs, precision):
    """Median wall time of unet(sample, t, text) at a 64x64 latent, after one warm-up run; with precision bf16
    under CPU autocast (linear and convolution layers in bfloat16, as the engine's precision=bf16)."""
    if precision == "bf16":
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            return time_forward(unet, batch, runs, "fp32")
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(batch, 4, 64, 64, generator=g)
    text = torch.randn(batch, 77, 1024, generator=g)
    t = torch.tensor(500)
    unet(sample, t, encoder_hidden_states=text)  # warm-up: first-touch allocations, kernel selection
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        unet(sample, t, encoder_hidden_states=text)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="output folder; the model goes to DIR/unet")
    ap.add_argument("--time", type=int, default=0, metavar="N", help="time N forward passes per batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-save", action="store_true", help="only build (and time); write nothing")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads (the Swift side takes the same count)")
    ap.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32"],
                    help="time in each of these (bf16: CPU autocast)")
    args = ap.parse_args()

    # Two threads by default: the benchmark machine has 2 cores and the Swift engine is measured the same way.
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # diffusers' default (PyTorch) initialisation, seeded
    start = time.perf_counter()
    unet = UNet2DConditionModel(**SD21_BASE_UNET_CONFIG).eval()
    n_params = sum(p.numel() for p in unet.parameters())
    print(f"built UNet2DConditionModel: {n_params} parameters in {time.perf_counter() - start:.1f} s")

    if not args.no_save:
        out = os.path.join(args.dir, "unet")
        start = time.perf_counter()
        unet.save_pretrained(out, safe_serialization=True)  # F32, one file (under diffusers' 10 GB shard limit)
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        print(f"saved {out}: {size / 1e9:.2f} GB in {time.perf_counter() - start:.1f} s")

    if args.time > 0:
        # Other processes on a 2-core machine distort the numbers: record the load for the reader.
        print("# load average before timing: %.2f %.2f %.2f" % os.getloadavg())
        for batch in (1, 3):
            for precision in args.precision:
                median, times = time_forward(unet, batch, args.time, precision)
                print(f"# batch {batch} {precision} runs: " + " ".join(f"{t:.3f}" for t in times))
                print(f"pytorch_unet_forward batch={batch} precision={precision} seconds={median:.3f}", flush=True)


if __name__ == "__main__":
    main()
