"""PyTorch peer for `tokenflow-bench kernels`: the same kernels at the same shapes, GFLOP/s per line
as '<name>\t<gflops>'. Run by the Swift benchmark; pins in Tests/Fixtures/requirements.txt."""
import argparse
import time

import torch
import torch.nn.functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
# bf16: the linear and convolution operands in bfloat16 (oneDNN's AMX kernels where the CPU has them), as the
# engine's precision=bf16 does; attention and the nearest-neighbour search stay float32 there too.
parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
args = parser.parse_args()
torch.set_num_threads(args.threads)
weights_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32


def median_seconds(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def report(name, flops, fn):
    with torch.no_grad():
        print(f"{name}\t{flops / median_seconds(fn) / 1e9:.2f}", flush=True)


for tokens, fin, fout in [(4096, 320, 320), (4096, 320, 2560), (1024, 640, 5120), (256, 1280, 10240)]:
    x, w = (torch.rand(tokens, fin) - 0.5).to(weights_dtype), (torch.rand(fout, fin) - 0.5).to(weights_dtype)
    report(f"gemm {tokens}x{fin}->{fout}", 2.0 * tokens * fin * fout, lambda: F.linear(x, w))
for channels, size in [(320, 64), (640, 32), (1280, 16), (1280, 8)]:
    x = (torch.rand(1, channels, size, size) - 0.5).to(weights_dtype)
    w = (torch.rand(channels, channels, 3, 3) - 0.5).to(weights_dtype)
    report(f"conv3x3 {channels}ch {size}x{size}", 2.0 * channels * channels * 9 * size * size,
           lambda: F.conv2d(x, w, padding=1))
for keys, label in [(4096, "self"), (3 * 4096, "extended"), (77, "cross")]:
    q, k, v = (torch.rand(1, 5, n, 64) - 0.5 for n in (4096, keys, keys))
    report(f"attention {label} 4096x{keys} 5 heads", 4.0 * 4096 * keys * 320,
           lambda: F.scaled_dot_product_attention(q, k, v))
a, b = torch.rand(4096, 320) - 0.5, torch.rand(4096, 320) - 0.5
report("nn-argmax 4096x4096 d320", 2.0 * 4096 * 4096 * 320,
       lambda: ((a / a.norm(dim=-1, keepdim=True)) @ (b / b.norm(dim=-1, keepdim=True)).T).argmax(dim=-1))
