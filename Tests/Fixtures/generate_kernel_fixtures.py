"""Inputs and PyTorch outputs for the Tensors kernel tests -> Tests/Fixtures/kernels.safetensors.

Run: venv/bin/python Tests/Fixtures/generate_kernel_fixtures.py   (pins: Tests/Fixtures/requirements.txt)
Every expected tensor is computed by PyTorch's own ops (torch.nn.functional), in float32 on CPU.
Shapes are deliberately odd (non-square, not multiples of tile sizes, batch > 1).
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(1234)
torch.set_num_threads(1)
out = {}


def rand(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).float()


# GEMM / linear
a, b = rand(37, 53), rand(53, 29)
out |= {"matmul.a": a, "matmul.b": b, "matmul.out": a @ b}
a, b = rand(3, 17, 33), rand(3, 33, 45)
out |= {"bmm.a": a, "bmm.b": b, "bmm.out": torch.bmm(a, b)}
a, b = rand(300, 200), rand(150, 200)  # large enough to be split over threads; B transposed
out |= {"matmul_bt.a": a, "matmul_bt.b": b, "matmul_bt.out": a @ b.T}
x, w, bias = rand(2, 5, 70), rand(33, 70, scale=0.1), rand(33)
out |= {"linear.x": x, "linear.w": w, "linear.b": bias, "linear.out": F.linear(x, w, bias)}

# Convolutions (NCHW, weight [Cout, Cin, kh, kw])
cases = {
    "conv3x3": ((2, 5, 13, 11), (7, 5, 3, 3), 1, (1, 1, 1, 1)),
    "conv3x3s2": ((1, 6, 15, 10), (4, 6, 3, 3), 2, (1, 1, 1, 1)),
    "conv1x1": ((2, 9, 7, 5), (6, 9, 1, 1), 1, (0, 0, 0, 0)),
    # The VAE encoder's downsampler pads (right 1, bottom 1) then convolves with stride 2, padding 0.
    "conv3x3s2_asym": ((1, 4, 12, 9), (5, 4, 3, 3), 2, (0, 1, 0, 1)),
    "conv3x3_wide": ((1, 64, 20, 18), (32, 64, 3, 3), 1, (1, 1, 1, 1)),
}
for name, (xs, ws, stride, (left, right, top, bottom)) in cases.items():
    x, w, bias = rand(*xs), rand(*ws, scale=0.2), rand(ws[0])
    y = F.conv2d(F.pad(x, (left, right, top, bottom)), w, bias, stride=stride)
    out |= {f"{name}.x": x, f"{name}.w": w, f"{name}.b": bias, f"{name}.out": y}

# Normalisation and activations
x, w, bias = rand(2, 32, 7, 9, scale=3) + 1.5, 1 + rand(32, scale=0.2), rand(32, scale=0.2)
out |= {"groupnorm.x": x, "groupnorm.w": w, "groupnorm.b": bias,
        "groupnorm.out": F.group_norm(x, 8, w, bias, eps=1e-6),
        "groupnorm_silu.out": F.silu(F.group_norm(x, 8, w, bias, eps=1e-6))}
x, w, bias = rand(3, 11, 40, scale=2) - 0.5, 1 + rand(40, scale=0.2), rand(40, scale=0.2)
out |= {"layernorm.x": x, "layernorm.w": w, "layernorm.b": bias,
        "layernorm.out": F.layer_norm(x, (40,), w, bias, eps=1e-5)}
x = torch.cat([torch.linspace(-12, 12, 997), rand(1000, scale=3)])
out |= {"act.x": x, "act.silu": F.silu(x), "act.gelu": F.gelu(x), "act.quick_gelu": x * torch.sigmoid(1.702 * x)}
x = rand(3, 10, 48, scale=2)
hidden, gate = x.chunk(2, dim=-1)
out |= {"geglu.x": x, "geglu.out": hidden * F.gelu(gate)}
x = rand(7, 301, scale=8)
out |= {"softmax.x": x, "softmax.out": torch.softmax(x, dim=-1)}

# Shape ops
x = rand(2, 3, 5, 4)
out |= {"upsample.x": x, "upsample.out": F.interpolate(x, scale_factor=2.0, mode="nearest")}
out |= {"permute.x": x, "permute.out": x.permute(0, 2, 3, 1).contiguous()}
y = rand(2, 6, 5, 4)
out |= {"concat.y": y, "concat.out": torch.cat([x, y], dim=1)}


def sdpa(q, k, v, heads, causal=False):
    """diffusers layout [B, N, H*d] -> split heads, torch SDPA, merge heads."""
    bsz, nq, width = q.shape
    split = lambda t: t.reshape(bsz, t.shape[1], heads, -1).transpose(1, 2)
    o = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=causal)
    return o.transpose(1, 2).reshape(bsz, nq, -1)


# Attention: self-attention with several key tiles, cross-attention with 77 keys, causal (CLIP)
q, k, v = rand(2, 300, 64), rand(2, 700, 64), rand(2, 700, 64)
out |= {"attn_self.q": q, "attn_self.k": k, "attn_self.v": v, "attn_self.out": sdpa(q, k, v, 4)}
q, k, v = rand(2, 130, 40, scale=2), rand(2, 77, 40, scale=2), rand(2, 77, 40)
out |= {"attn_cross.q": q, "attn_cross.k": k, "attn_cross.v": v, "attn_cross.out": sdpa(q, k, v, 5)}
q, k, v = rand(1, 77, 64), rand(1, 77, 64), rand(1, 77, 64)
out |= {"attn_causal.q": q, "attn_causal.k": k, "attn_causal.v": v, "attn_causal.out": sdpa(q, k, v, 4, causal=True)}

# Cosine nearest neighbour (argmax over candidates); duplicated candidates make exact ties that
# argmax must resolve to the first index, also across the 1024-column block boundary.
queries, candidates = rand(600, 48), rand(1300, 48)
candidates[900] = candidates[5]
candidates[1100] = candidates[20] * 2.0
queries[3] = candidates[5] + 0.0
queries[4] = candidates[1100]
qn = queries / queries.norm(dim=-1, keepdim=True)
cn = candidates / candidates.norm(dim=-1, keepdim=True)
indices = (qn @ cn.T).argmax(dim=-1)
assert indices[3] == 5 and indices[4] == 20, indices[:5]
out |= {"nn.queries": queries, "nn.candidates": candidates, "nn.indices": indices.float()}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels.safetensors")
save_file({k: v.contiguous().clone() for k, v in out.items()}, path)
print(f"wrote {len(out)} tensors to {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
