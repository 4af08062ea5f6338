"""PyTorch's side of scripts/bench_vae.sh: diffusers' AutoencoderKL from MODEL_DIR/vae, timed as the Swift
bench times its own (an image of 0.1 everywhere, one warm-up run, then the median of N runs), fp32, CPU.

Usage (pinned venv of Tests/Fixtures/requirements.txt):

    venv/bin/python scripts/bench_vae_torch.py MODEL_DIR [--size WxH] [--repeats N] [--threads T]

Prints one machine-readable line:

    pytorch_vae size=512x512 encode_seconds=3.10 decode_seconds=6.20
"""
import argparse
import statistics
import time

import torch
from diffusers import AutoencoderKL


def median_seconds(run, repeats):
    run()  # warm-up: first-touch allocations, kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="model folder with vae/ (diffusers layout)")
    ap.add_argument("--size", default="512x512")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(n) for n in args.size.split("x"))
    vae = AutoencoderKL.from_pretrained(f"{args.dir}/vae", torch_dtype=torch.float32).eval()
    image = torch.full((1, 3, height, width), 0.1)
    latents = vae.encode(image).latent_dist.mean
    encode = median_seconds(lambda: vae.encode(image).latent_dist.mean, args.repeats)
    decode = median_seconds(lambda: vae.decode(latents).sample, args.repeats)
    print(f"pytorch_vae size={width}x{height} encode_seconds={encode:.2f} decode_seconds={decode:.2f}")


main()
