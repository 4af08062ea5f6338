"""An independent PyTorch implementation of COVE (Wang et al., NeurIPS 2024, "COVE: Unleashing the Diffusion
Feature Correspondence for Consistent Video Editing", arXiv 2406.08850) on the tiny test models, recording the
expected outputs the Swift COVE method is tested against.

Every decision this file implements is written down, with the paper's section/equation or the reason, in
Tests/Fixtures/COVE-DECISIONS.md; the function names below follow that document and the paper's equations.
COVE's authors published no code; nothing here is copied from FLATTEN, DIFT, ToMe/tomesd, TokenFlow or
diffusers (diffusers' UNet2DConditionModel / AutoencoderKL / DDIMScheduler and transformers' CLIPTextModel
are used as the networks; the attention, the correspondences, the token merging and the injection are this
file's own code: an attention processor installed on every self-attention layer and forward hooks on conv2).

Usage (from the repository root, with the pinned venv of Tests/Fixtures/requirements.txt):

    venv/bin/python Tests/Fixtures/generate_cove_fixtures.py --out Tests/Fixtures/expected [--skip-fp64]

Time: about 10 s per model with --skip-fp64 on a lightly loaded 2-core machine (load average 1.7; most of it
the sensitivity and static-clip runs); the whole script with the fp64 report took 2.5 to 14 minutes while
other jobs loaded the machine (load average 3 to 7). CPU, fp32, torch.set_num_threads(2) (--threads),
torch.use_deterministic_algorithms(True); a second run rewrites byte-identical files (checked with cmp).
Inputs: the tiny models Tests/Fixtures/models/{sd2-tiny,sd15-tiny} (sd15-tiny's weights are the F16 "fp16"
variant files, upcast to fp32 on load) and the clip Tests/Fixtures/expected/tokenflow-frames.safetensors
(`frames` [16, 64, 64, 3] uint8 values stored as F16; the first 6 frames are used).

Writes Tests/Fixtures/expected/cove-<model>.safetensors for both models. Metadata: one key, `info`, sorted
JSON (settings, block lists, versions, layouts). All tensors F32 except the int32 position tensors.
Frames f, tokens p = y * W + x (row-major flat index on the latent grid), K = cove_k.

  Correspondences (model-independent; identical in both files):
  corr.features          [5, 8, 12, 10]  random N(0,1) features (N, C, H, W), H != W on purpose
  corr.positions         [5, 120, 5, 3]  int32, window 5, K 3, computed by the brute-force routine
  corr.even.positions    [5, 120, 5, 3]  int32, window 2 (even: offsets -1..0), K 3 on corr.features; at the
                                         top-left corner the window holds 1 position -> fill rule
  corr.ties.features     [5, 8, 12, 10]  every token one of 3 palette vectors with entries in {-1, 0, 1} and
                                         exactly 4 non-zeros (norm 2, so normalised dot products are exact
                                         multiples of 1/4 under any summation order): exact ties everywhere
  corr.ties.positions    [5, 120, 5, 2]  int32, window 3, K 2: only the tie rule (lower flat index) decides
  Layout of every `*positions` tensor: [i, p, j, k] = flat position in frame j of the k-th correspondence
  (k = 0 is the top-1, ranks in decreasing cosine similarity) of token p of frame i; for j == i it is p
  repeated K times.

  Token merging (ToMe bipartite soft matching, merge ratio 0.5):
  tome.tokens            [4, 15, 8]      4 independent sets of M = 15 tokens (sets 2 and 3: palette tokens with
                                         exact duplicates, so score ties occur)
  tome.merged            [4, 8, 8]       merged sets in the canonical order [unmerged a tokens by ascending a
                                         index, then the b tokens (merged or not) in order]; r = floor(0.5*15) = 7

  DIFT correspondences of the clip (frames 0..5, 64x64 -> latent 8x8), cove_timestep 261, window 5, K 3:
  dift.latents           [6, 4, 8, 8]    clean latents: VAE mean * scaling_factor (0.18215)
  dift.noise             [4, 8, 8]       gaussianNoise(shape [4, 8, 8], seed 1) (the engine's SplitMix64 +
                                         Box-Muller, reproduced here bit for bit), the same for every frame
  dift.features          [6, 8, 8, 8]    output of up_blocks.3 (the decoder's final block, before conv_norm_out)
                                         for sqrt(a_261) z + sqrt(1 - a_261) noise, timestep 261, text embedding of
                                         the empty prompt "", plain per-frame UNet (no ST attention, no CGA);
                                         NOT normalised (normalisation per token is part of the correspondence step)
  dift.positions         [6, 64, 6, 3]   int32, correspondences of dift.features (window 5, K 3); the edit below uses
                                         exactly these

  One CGA self-attention layer in isolation (up_blocks.3.attentions.2.transformer_blocks.0.attn1 in sampling
  step 3, timestep 201, batch [source, uncond, cond] x 6 frames; no query/key injection in this block; this
  call's ToMe decisions have margins >= 1.2e-5, so a port does not flip them):
  cga.input              [18, 64, 8]     the layer's input (the block's norm1 output), rows = branch * 6 + frame
  cga.st                 [18, 64, 8]     dense spatio-temporal attention output (per branch over its 6 frames),
                                         heads concatenated, BEFORE to_out
  cga.output             [18, 64, 8]     the layer's output: CGA on cga.st with dift.positions, then to_out
                                         (Linear with bias); what replaces attn1(norm1(x)) in the block

  A whole COVE edit, 6 frames, inversion_steps 5, steps 5 (timesteps 801, 601, 401, 201, 1), guidance 7.5,
  cove_k 3, cove_window 5, cove_merge 0.5, pnp_f_t 0.8 (conv injection at the first int(5*0.8) = 4 steps),
  pnp_attn_t 0.5 (query/key injection at the first int(5*0.5) = 2 steps), prompt "a marble sculpture",
  negative_prompt "ugly, blurry", inversion_prompt "a colorful video", seed 1:
  edit.timesteps         [5]             801, 601, 401, 201, 1 (integers stored as F32)
  edit.inverted.<t>      [6, 4, 8, 8]    inversion latents at t = 1, 201, 401, 601, 801 (the last is 801)
  edit.init              [6, 4, 8, 8]    sampling start: add_noise(latents, eps, 801), eps solved from inverted.801
  edit.step<i>           [6, 4, 8, 8]    latents after sampling step i = 0..4 (at edit.timesteps[i])
  edit.final             [6, 4, 8, 8]    = edit.step4
  edit.decoded           [2, 3, 64, 64]  (vae.decode(final / 0.18215) / 2 + 0.5) clamped to [0, 1], frames 0 and 5
  The same edit with cove_merge 0 (no token merging, so nothing discrete after the correspondences: the
  continuous part of the method, for tight free-running comparisons; same dift.positions):
  nomerge.inverted.<t>   [6, 4, 8, 8]    its inversion latents (CGA without merging in the inversion too)
  nomerge.init           [6, 4, 8, 8]
  nomerge.step<i>        [6, 4, 8, 8]    i = 0..4
  nomerge.final          [6, 4, 8, 8]    = nomerge.step4
  Static clip (6 copies of frame 0 of the clip, everything recomputed: DIFT, correspondences, inversion, edit):
  static.final           [6, 4, 8, 8]    final latents: all 6 frames equal (checked here, printed)
  static.decoded         [1, 3, 64, 64]  frame 0 decoded (every frame decodes to it)

What it prints: statistics of every tensor; checks (brute force == sliding window for every correspondence
case; static clip frames equal; the static clip's correspondences are the identity; the recorded layer
recomputed from its input); the ToMe decision margins of the edit (how many of the 100 merge calls have a
score gap below 1e-6: these decisions flip under rounding noise, see below); sensitivity (how much CGA, the
merge and the correspondences change the result, so a port that skips one fails); the smallest similarity
margin between consecutive ranks of the DIFT top-K; the fp32-vs-fp64 discrepancy (the same code in float64:
inversion free-running, sampling teacher-forced and free-running); timings (other processes on the 2-core
machine inflate them, see the printed load average).

Tolerances (recommended; evidence in COVE-DECISIONS.md §11, fp32-vs-fp64 of the committed run):
  * corr.* positions: exact (the features are stored; palette ties are exact under any summation order).
  * tome.merged: 1e-6 abs (fp64: 1.2e-7). cga.st, cga.output (fed cga.input and dift.positions): 1e-5 abs
    (fp64: <= 8e-7).
  * dift.features: 2e-4 abs (fp64: 3.3e-5 of 12); dift.positions from a port's own features: exact (smallest
    rank margin 9.5e-5, 0 of 6912 entries change in fp64); dift.noise: exact.
  * nomerge.inverted.<t>: 1e-4 abs (fp64: <= 4.9e-6); nomerge.step<i> free-running: 2e-3 abs from a port's
    own inversion, 1e-3 from the fixture's init and inverted latents (fp64: <= 7.3e-5).
  * edit.* (cove_merge 0.5): ToMe's discrete decisions have gaps down to 1e-7, so rounding differences flip
    some (fp64 free-running: step 2 jumps by 2.5e-3 / 2.2e-2, final 2.9e-3 / 0.10; teacher-forced steps
    <= 1.9e-5). Per step teacher-forced (from edit.step<i-1>, the fixture's edit.inverted.<t>, edit.init and
    dift.positions): mean |diff| <= 5e-3 and max <= 0.25; free-running edit.final: mean <= 5e-2, max <= 0.5;
    edit.inverted.<t> from a port's own inversion: mean <= 1e-3, max <= 0.1; edit.decoded: mean <= 1e-2.
    Bugs are far larger (off-by-one r, swapped a/b, own frame in Corr: mean >= 9e-2 at step 0).
  * static.final: the 6 frames equal each other within 1e-6 (bitwise equal here).
"""
import argparse
import json
import math
import os
import time
import warnings

import numpy as np
import torch
import diffusers
import transformers
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))

# ----------------------------------------------------------------------------------------------------
# Settings (COVE-DECISIONS.md §1 for the engine's names and defaults)
# ----------------------------------------------------------------------------------------------------

MODELS = {"sd2-tiny": None, "sd15-tiny": "fp16"}  # name: diffusers weight variant
N_FRAMES = 6
STEPS = 5
INVERSION_STEPS = 5
GUIDANCE = 7.5
COVE_K = 3
COVE_WINDOW = 5
COVE_MERGE = 0.5
COVE_TIMESTEP = 261
PNP_F_T = 0.8
PNP_ATTN_T = 0.5
SEED = 1
PROMPT = "a marble sculpture"
NEGATIVE_PROMPT = "ugly, blurry"
INVERSION_PROMPT = "a colorful video"
DIFT_PROMPT = ""
DECODED_FRAMES = [0, 5]

# Blocks (diffusers module paths). COVE-DECISIONS.md §4 (CGA blocks), §6 (injection sets).
CGA_BLOCKS = {  # the self-attention layers at the latent resolution (FLATTEN: `if h in [64]`)
    "down_blocks.0.attentions.0.transformer_blocks.0",
    "down_blocks.0.attentions.1.transformer_blocks.0",
    "up_blocks.3.attentions.0.transformer_blocks.0",
    "up_blocks.3.attentions.1.transformer_blocks.0",
    "up_blocks.3.attentions.2.transformer_blocks.0",
}
QK_INJECTION_BLOCKS = {  # FLATTEN's saved_q4..q9 / saved_k4..k9
    "up_blocks.1.attentions.1.transformer_blocks.0",
    "up_blocks.1.attentions.2.transformer_blocks.0",
    "up_blocks.2.attentions.0.transformer_blocks.0",
    "up_blocks.2.attentions.1.transformer_blocks.0",
    "up_blocks.2.attentions.2.transformer_blocks.0",
    "up_blocks.3.attentions.0.transformer_blocks.0",
}
CONV_INJECTION_RESNETS = ["up_blocks.1.resnets.0", "up_blocks.1.resnets.1", "up_blocks.2.resnets.0"]  # saved_features0..2
RECORDED_LAYER = "up_blocks.3.attentions.2.transformer_blocks.0"  # cga.*: latent resolution, not injected
RECORDED_STEP = 3  # cga.* come from sampling step 3 (timestep 201): its ToMe decisions have margins >= 1e-5
DIFT_BLOCK = 3  # up_blocks[3]: the decoder's final block

SOURCE, UNCOND, COND = 0, 1, 2  # branch order in every sampling UNet call (the engine's Branch)


# ----------------------------------------------------------------------------------------------------
# The engine's seeded Gaussian noise (Sources/Tensors/Random.swift: SplitMix64 + Box-Muller), bit for bit
# ----------------------------------------------------------------------------------------------------

MASK64 = (1 << 64) - 1


def splitmix64(seed, count):
    """`count` outputs of SplitMix64 starting from state `seed` (Python ints, exact 64-bit wraparound)."""
    state, out = seed & MASK64, []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append(z ^ (z >> 31))
    return out


def gaussian_noise(shape, seed):
    """gaussianNoise(shape:seed:): pairs of uniforms u = ((x >> 11) + 1) * 2^-53 in (0, 1], Box-Muller in
    double, both outputs used (cos then sin), rounded to float32."""
    n = int(np.prod(shape))
    raw = splitmix64(seed, n + (n % 2))
    units = [((x >> 11) + 1) * 2.0 ** -53 for x in raw]
    values = []
    for i in range(0, n, 2):
        radius = math.sqrt(-2.0 * math.log(units[i]))
        angle = 2.0 * math.pi * units[i + 1]
        values.append(radius * math.cos(angle))
        values.append(radius * math.sin(angle))
    return torch.tensor(np.array(values[:n], dtype=np.float64).astype(np.float32)).reshape(shape)


# ----------------------------------------------------------------------------------------------------
# Correspondence acquisition (paper Sec. 3.2, Eq. 4-10)
# ----------------------------------------------------------------------------------------------------

def normalise_tokens(features):
    """Eq. 4 "normalized diffusion feature": [N, C, H, W] -> [N, H*W, C], each token divided by its L2 norm
    (clamped to >= 1e-12)."""
    n, c, h, w = features.shape
    tokens = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
    return tokens / tokens.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def window_offsets(window):
    """Eq. 10: F[h - l/2 : h + l/2, ...]: offsets -floor(l/2) .. l - 1 - floor(l/2) (odd l: symmetric;
    even l: the half-open slice of Eq. 10)."""
    first = -(window // 2)
    return range(first, first + window)


def window_positions(center, height, width, window):
    """Flat positions of the l x l window centred on `center`, positions outside the map left out (no
    padding, no clamping), in ascending flat order."""
    cy, cx = divmod(center, width)
    return [y * width + x for y in (cy + d for d in window_offsets(window)) if 0 <= y < height
            for x in (cx + d for d in window_offsets(window)) if 0 <= x < width]


def fill_to_k(ranked, k):
    """K slots from a ranked list: when the window holds fewer than K positions, the last ranked position
    fills the remaining slots."""
    return (ranked + [ranked[-1]] * k)[:k]


def top_k_in_window(query, frame_tokens, center, height, width, window, k):
    """Eq. 8 restricted by Eq. 10: the K window positions of `frame_tokens` [H*W, C] with the largest cosine
    similarity to `query` [C]; ties: the lower flat index first."""
    candidates = window_positions(center, height, width, window)
    scores = (frame_tokens[candidates] @ query).tolist()
    ranked = [p for _, p in sorted(zip(scores, candidates), key=lambda sp: (-sp[0], sp[1]))]
    return fill_to_k(ranked, k)


def correspondences_sliding_window(features, window, k):
    """Eq. 7-10 chained (Eq. 9): for token p of frame i, frame i+1's K matches are searched in the window
    centred on p with p's feature; frame i+2's in the window centred on frame i+1's top-1 match, with THAT
    match's feature (Eq. 9: row [h^1_{i+1}, w^1_{i+1}] of S_{i+1}); and so on to the last frame. The same
    backwards to frame 0. Returns int32 [N, H*W, N, K] (j == i: p repeated K times)."""
    n, _, height, width = features.shape
    tokens = normalise_tokens(features).numpy()
    t = height * width
    out = np.zeros((n, t, n, k), dtype=np.int32)
    for i in range(n):
        for p in range(t):
            out[i, p, i, :] = p
            for step in (1, -1):
                center, query, j = p, tokens[i, p], i + step
                while 0 <= j < n:
                    matches = top_k_in_window(query, tokens[j], center, height, width, window, k)
                    out[i, p, j, :] = matches
                    center = matches[0]
                    query = tokens[j, center]
                    j += step
    return torch.from_numpy(out)


def correspondences_brute_force(features, window, k):
    """The same correspondences from the full similarity matrix S = F F^T (Eq. 5) over all N*H*W tokens,
    each row masked to the window (outside: -inf), ranked by a stable descending sort (ties: lower flat
    index), chained as in Eq. 9. Written independently of correspondences_sliding_window."""
    n, _, height, width = features.shape
    t = height * width
    tokens = normalise_tokens(features).reshape(n * t, -1)
    similarity = tokens @ tokens.T  # Eq. 5
    ys = torch.arange(t) // width
    xs = torch.arange(t) % width
    first = -(window // 2)

    def hop(frame_from, center, frame_to):
        row = similarity[frame_from * t + center, frame_to * t:(frame_to + 1) * t]
        cy, cx = center // width, center % width
        inside = (ys - cy >= first) & (ys - cy < first + window) & (xs - cx >= first) & (xs - cx < first + window)
        masked = torch.where(inside, row, torch.full_like(row, -math.inf))
        order = torch.sort(masked, descending=True, stable=True).indices
        ranked = [int(q) for q in order[: int(inside.sum())]]
        return fill_to_k(ranked, k)

    out = torch.zeros((n, t, n, k), dtype=torch.int32)
    for i in range(n):
        for p in range(t):
            out[i, p, i, :] = p
            for step in (1, -1):
                frame, center, j = i, p, i + step
                while 0 <= j < n:
                    matches = hop(frame, center, j)
                    out[i, p, j, :] = torch.tensor(matches, dtype=torch.int32)
                    frame, center = j, matches[0]
                    j += step
    return out


def rank_margins(features, positions, window):
    """Smallest gap between consecutive similarities among the K+1 best window candidates of every hop the
    chains make (how far the ranking is from a tie); 0 means an exact tie somewhere."""
    n, _, height, width = features.shape
    tokens = normalise_tokens(features.double())
    k = positions.shape[-1]
    smallest = math.inf
    for i in range(n):
        for p in range(height * width):
            for step in (1, -1):
                frame, center, j = i, p, i + step
                while 0 <= j < n:
                    candidates = window_positions(center, height, width, window)
                    scores = sorted((tokens[j, candidates] @ tokens[frame, center]).tolist(), reverse=True)[: k + 1]
                    if len(scores) > 1:
                        smallest = min(smallest, min(a - b for a, b in zip(scores, scores[1:])))
                    frame, center = j, int(positions[i, p, j, 0])
                    j += step
    return smallest


# ----------------------------------------------------------------------------------------------------
# Correspondence-guided attention (paper Sec. 3.3, Eq. 11-14) with ToMe merging (Bolya et al.)
# ----------------------------------------------------------------------------------------------------

def merge_count(count, ratio):
    """r = floor(ratio * count) as the engine's scheduleStepCount computes int(steps * fraction)."""
    return int(math.floor(float(count) * float(np.float32(ratio)) + 1e-4))


def first_argmax(scores):
    """Max over the last axis and the LOWEST index reaching it."""
    best = scores.max(dim=-1).values
    index = torch.arange(scores.shape[-1]).expand_as(scores)
    sentinel = torch.full_like(index, scores.shape[-1])
    return best, torch.where(scores == best[..., None], index, sentinel).min(dim=-1).values


TOME_MARGINS = None  # a list to collect (boundary gap, argmax gap) per call, or None


def bipartite_soft_matching(tokens, ratio):
    """Eq. 12, Merge(Corr): ToMe's bipartite soft matching on [Q, M, C] (Q independent sets). a = tokens at
    even positions 0, 2, ..., b = odd positions; cosine similarity of every a to every b on the tokens
    themselves; each a's best b (ties: lowest b index); the r = min(floor(ratio * M), floor(M / 2)) a-tokens
    with the highest best-score (ties: lower a index first) are merged into their b by the plain mean of the
    b token and every a merged into it. Returns [Q, M - r, C]: unmerged a tokens by ascending a index, then
    all b."""
    q, m, c = tokens.shape
    a, b = tokens[:, 0::2], tokens[:, 1::2]
    r = min(merge_count(m, ratio), m // 2)
    if r == 0:
        return tokens
    a_unit = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b_unit = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    scores = a_unit @ b_unit.transpose(1, 2)
    best, match = first_argmax(scores)
    order = torch.sort(best, dim=1, descending=True, stable=True).indices
    merged, kept = order[:, :r], torch.sort(order[:, r:], dim=1).values
    if TOME_MARGINS is not None:
        TOME_MARGINS.append(decision_margins(scores, best, order, r))
    destination = match.gather(1, merged)
    sums = b.clone().scatter_add_(1, destination[..., None].expand(q, r, c), a.gather(1, merged[..., None].expand(q, r, c)))
    counts = torch.ones(q, b.shape[1], dtype=tokens.dtype).scatter_add_(1, destination, torch.ones(q, r, dtype=tokens.dtype))
    return torch.cat([a.gather(1, kept[..., None].expand(q, kept.shape[1], c)), sums / counts[..., None]], dim=1)


def decision_margins(scores, best, order, r):
    """How close this call's discrete decisions are to a tie: the gap between the r-th and (r+1)-th best
    scores (which a tokens are merged), and for every merged a token the gap between its best and second
    best b (where it goes). Diagnostics only."""
    ranked = best.gather(1, order)
    boundary = (ranked[:, r - 1] - ranked[:, r]).min().item() if r < best.shape[1] else math.inf
    if scores.shape[2] < 2:
        return boundary, math.inf
    top2 = scores.gather(1, order[:, :r, None].expand(-1, -1, scores.shape[2])).topk(2, dim=-1).values
    return boundary, (top2[..., 0] - top2[..., 1]).min().item()


def corresponding_tokens(tokens, positions):
    """Eq. 11: for every token (i, p) of [N, T, C], the tokens at its K positions in every OTHER frame j,
    ordered by j ascending, then rank k: [N * T, (N - 1) * K, C]."""
    n, t, c = tokens.shape
    k = positions.shape[-1]
    others = torch.tensor([[j for j in range(n) if j != i] for i in range(n)], dtype=torch.long)  # [N, N-1]
    where = torch.stack([positions[i][:, others[i], :] for i in range(n)]).long()  # [N, T, N-1, K]
    frames = others[:, None, :, None].expand_as(where)
    return tokens[frames, where].reshape(n * t, (n - 1) * k, c)


def correspondence_guided_attention(tokens, positions, heads, ratio):
    """Eq. 13-14 on one branch's tokens [N, T, C] (the spatio-temporal attention output, heads concatenated):
    Q = the token, K = V = Merge(Corr), no projections; per head softmax(Q K^T / sqrt(d_head)) V; heads
    concatenated. A group of one frame has no Corr: its tokens are returned unchanged."""
    n, t, c = tokens.shape
    if n < 2:
        return tokens
    d = c // heads
    merged = bipartite_soft_matching(corresponding_tokens(tokens, positions), ratio)  # [N*T, M', C]
    query = tokens.reshape(n * t, heads, d)
    keys = merged.reshape(n * t, merged.shape[1], heads, d)
    weights = (torch.einsum("qhd,qmhd->qhm", query, keys) * d ** -0.5).softmax(dim=-1)
    return torch.einsum("qhm,qmhd->qhd", weights, keys).reshape(n, t, c)


def spatio_temporal_attention(query, key, value, heads):
    """Dense spatio-temporal self-attention of one branch (Sec. 3.3 "we also retain the spatial-temporal
    attention"): [N, T, C] each; every token of every frame attends to all N*T tokens of the branch."""
    n, t, c = query.shape
    d = c // heads

    def split(x):
        return x.reshape(n * t, heads, d).transpose(0, 1)  # [heads, N*T, d]

    weights = (split(query) @ split(key).transpose(1, 2) * d ** -0.5).softmax(dim=-1)
    return (weights @ split(value)).transpose(0, 1).reshape(n, t, c)


# ----------------------------------------------------------------------------------------------------
# UNet hooks: every self-attention layer (ST attention, CGA, query/key injection), conv2 injection
# ----------------------------------------------------------------------------------------------------

class CoveState:
    """What the hooks need for the current UNet call."""

    def __init__(self):
        self.frames = 1  # frames per branch
        self.positions = None  # int32 [N, T, N, K] or None (plain per-frame self-attention: DIFT)
        self.merge = COVE_MERGE
        self.use_cga = True
        self.inject_qk = False
        self.inject_conv = False
        self.record = None  # block path -> dict, filled when that block runs


def source_over_guidance(x, frames):
    """[3N, ...] with the source rows (first N) copied over the uncond and cond rows (PnP injection)."""
    out = x.clone()
    out[frames:2 * frames] = x[:frames]
    out[2 * frames:] = x[:frames]
    return out


class CoveSelfAttention:
    """attn1 of one BasicTransformerBlock: q/k/v projections (source q/k over the guidance branches in the
    injection steps), dense spatio-temporal attention per branch, CGA at the latent-resolution blocks, to_out."""

    def __init__(self, state, block):
        self.state, self.block = state, block

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert encoder_hidden_states is None and attention_mask is None and not kwargs
        assert attn.group_norm is None and attn.spatial_norm is None and attn.norm_q is None and attn.norm_k is None
        assert not attn.residual_connection and attn.rescale_output_factor == 1.0
        s = self.state
        batch, tokens, width = hidden_states.shape
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        if s.positions is None:  # DIFT: the plain per-frame UNet
            out = torch.cat([spatio_temporal_attention(query[f:f + 1], key[f:f + 1], value[f:f + 1], attn.heads)
                             for f in range(batch)])
        else:
            n = s.frames
            branches = batch // n
            assert branches * n == batch
            if s.inject_qk and self.block in QK_INJECTION_BLOCKS:
                assert branches == 3
                query, key = source_over_guidance(query, n), source_over_guidance(key, n)
            rows = [slice(b * n, (b + 1) * n) for b in range(branches)]
            st = torch.cat([spatio_temporal_attention(query[r], key[r], value[r], attn.heads) for r in rows])
            out = st
            first_margin = len(TOME_MARGINS) if TOME_MARGINS is not None else 0
            if s.use_cga and self.block in CGA_BLOCKS:
                assert tokens == s.positions.shape[1], (self.block, tokens)
                out = torch.cat([correspondence_guided_attention(st[r], s.positions, attn.heads, s.merge) for r in rows])
            if s.record is not None and self.block in s.record:
                s.record[self.block] = dict(input=hidden_states.clone(), st=st.clone(),
                                            margins=TOME_MARGINS[first_margin:] if TOME_MARGINS is not None else [])
        out = attn.to_out[1](attn.to_out[0](out))
        if s.record is not None and self.block in s.record and s.positions is not None:
            s.record[self.block]["output"] = out.clone()
        return out


def install_hooks(unet, state):
    processors = {}
    for name, processor in unet.attn_processors.items():
        block, layer = name.rsplit(".", 2)[0], name.rsplit(".", 2)[1]
        processors[name] = CoveSelfAttention(state, block) if layer == "attn1" else processor
    unet.set_attn_processor(processors)
    for path in CONV_INJECTION_RESNETS:
        def after_conv2(module, inputs, output):
            if state.inject_conv:
                return source_over_guidance(output, state.frames)
            return output
        unet.get_submodule(path).conv2.register_forward_hook(after_conv2)
    captured = {}
    unet.up_blocks[DIFT_BLOCK].register_forward_hook(lambda module, inputs, output: captured.__setitem__("dift", output))
    return captured


# ----------------------------------------------------------------------------------------------------
# Models, text, frames
# ----------------------------------------------------------------------------------------------------

class Models:
    def __init__(self, name, dtype):
        folder = os.path.join(HERE, "models", name)
        kw = dict(torch_dtype=torch.float32, variant=MODELS[name])
        self.unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw).to(dtype).eval()
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw).to(dtype).eval()
        self.text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw).to(dtype).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        self.scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
        self.dtype = dtype
        self.state = CoveState()
        self.captured = install_hooks(self.unet, self.state)
        self.scale = self.vae.config.scaling_factor

    def embed(self, prompt):
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids)[0]

    def unet_eps(self, x, t, context):
        out = self.unet(x, torch.tensor(t), encoder_hidden_states=context).sample
        assert self.scheduler.config.prediction_type == "epsilon"
        return out


def load_clip_frames(n):
    frames = load_file(os.path.join(HERE, "expected", "tokenflow-frames.safetensors"))["frames"]  # [16, 64, 64, 3]
    return frames[:n].to(torch.float32)


def to_images(frames_u8, dtype):
    """uint8-valued NHWC -> NCHW in [-1, 1]: 2 * (v / 255) - 1."""
    return (frames_u8.permute(0, 3, 1, 2).contiguous() / 255.0 * 2.0 - 1.0).to(dtype)


@torch.no_grad()
def encode(models, images):
    return models.vae.encode(images).latent_dist.mean * models.scale


@torch.no_grad()
def decode(models, latents):
    return (models.vae.decode(latents / models.scale).sample / 2 + 0.5).clamp(0, 1)


# ----------------------------------------------------------------------------------------------------
# DIFT features (Sec. 3.2 Eq. 4; Sec. 4.1 / App. A: t = 261; App. C: the final decoder layer)
# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def dift_features(models, latents, noise):
    """z_t = sqrt(a_t) z + sqrt(1 - a_t) noise (one noise tensor for every frame), one plain UNet pass per
    frame at timestep cove_timestep with the empty prompt; the output of up_blocks[3]."""
    s = models.state
    s.positions, s.inject_qk, s.inject_conv = None, False, False
    alpha = models.scheduler.alphas_cumprod[COVE_TIMESTEP].to(models.dtype)
    noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise.to(models.dtype)[None]
    context = models.embed(DIFT_PROMPT).expand(latents.shape[0], -1, -1)
    models.captured.clear()
    models.unet_eps(noisy, COVE_TIMESTEP, context)
    return models.captured["dift"]


# ----------------------------------------------------------------------------------------------------
# Inversion (Eq. 3) and sampling with PnP injection
# ----------------------------------------------------------------------------------------------------

def timesteps_of(models, steps):
    scheduler = DDIMScheduler.from_config(models.scheduler.config)
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps], scheduler


@torch.no_grad()
def ddim_inversion(models, latents, positions, keep):
    """Eq. 3 as the engine runs it (ClipEdit.invert): ascending timesteps; at t, eps = UNet(x, t) on the
    current latents with the inversion prompt (ST attention + CGA over the group), x0 from the previous level
    (alpha_prev = final_alpha_cumprod at the first step), then x = sqrt(a_t) x0 + sqrt(1 - a_t) eps.
    Returns {t: latents} for t in `keep` and the last latents."""
    s = models.state
    s.frames, s.positions, s.inject_qk, s.inject_conv = latents.shape[0], positions, False, False
    descending, scheduler = timesteps_of(models, INVERSION_STEPS)
    ascending = descending[::-1]
    acp = scheduler.alphas_cumprod.to(models.dtype)
    context = models.embed(INVERSION_PROMPT).expand(latents.shape[0], -1, -1)
    x, saved = latents, {}
    for i, t in enumerate(ascending):
        alpha_t = acp[t]
        alpha_prev = acp[ascending[i - 1]] if i > 0 else scheduler.final_alpha_cumprod.to(models.dtype)
        eps = models.unet_eps(x, t, context)
        x0 = (x - (1 - alpha_prev).sqrt() * eps) / alpha_prev.sqrt()
        x = alpha_t.sqrt() * x0 + (1 - alpha_t).sqrt() * eps
        if t in keep:
            saved[t] = x
    return saved, x, ascending[-1]


def initial_latents(models, clean, last, last_t, first_t):
    """The engine's KeyframePropagation.initialLatents: eps solved from the last inversion latents,
    x = add_noise(clean, eps, first sampling timestep)."""
    alpha = models.scheduler.alphas_cumprod[last_t].to(models.dtype)
    eps = (last - alpha.sqrt() * clean) / (1 - alpha).sqrt()
    first = models.scheduler.alphas_cumprod[first_t].to(models.dtype)
    return first.sqrt() * clean + (1 - first).sqrt() * eps


@torch.no_grad()
def sampling_step(models, scheduler, x, t, step, source, positions, texts, record=None):
    """One denoising step of the group: UNet on [source (inverted latents at t, inversion prompt), x (negative
    prompt), x (prompt)] with ST attention + CGA in every branch, the source's conv2 features and
    self-attention queries/keys copied over the guidance branches in the first int(steps * pnp_f_t) /
    int(steps * pnp_attn_t) steps; CFG; DDIM step (eta 0)."""
    n = x.shape[0]
    s = models.state
    s.frames, s.positions = n, positions
    s.inject_conv = step < int(STEPS * PNP_F_T + 1e-4)
    s.inject_qk = step < int(STEPS * PNP_ATTN_T + 1e-4)
    s.record = record
    context = torch.cat([texts["source"].expand(n, -1, -1), texts["uncond"].expand(n, -1, -1),
                         texts["cond"].expand(n, -1, -1)])
    out = models.unet_eps(torch.cat([source, x, x]), t, context)
    s.record, s.inject_conv, s.inject_qk = None, False, False
    uncond, cond = out[n:2 * n], out[2 * n:]
    guided = uncond + GUIDANCE * (cond - uncond)
    return scheduler.step(guided, t, x, eta=0.0).prev_sample


@torch.no_grad()
def cove_edit(models, frames_u8, teacher=None, positions=None, use_cga=True, merge=COVE_MERGE, record=None):
    """The whole method on one group: encode, DIFT, correspondences, inversion, sampling, decode.
    teacher: {"positions", "latents", "inverted", "last", "init", "step<i>"} from the fp32 run; given, the
    float64 run reuses the fp32 correspondences and inverted latents, and starts each step from the fp32
    run's previous step (teacher forcing)."""
    dtype = models.dtype
    models.state.use_cga, models.state.merge = use_cga, merge
    timings = {}
    t0 = time.perf_counter()
    latents = encode(models, to_images(frames_u8, dtype)) if teacher is None else teacher["latents"].to(dtype)
    noise = gaussian_noise([latents.shape[1], latents.shape[2], latents.shape[3]], SEED)
    features = dift_features(models, latents, noise)
    if positions is None:
        positions = (correspondences_sliding_window(features.float(), COVE_WINDOW, COVE_K) if teacher is None
                     else teacher["positions"])
    timings["dift"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    timesteps, scheduler = timesteps_of(models, STEPS)
    inverted, last, last_t = ddim_inversion(models, latents, positions, set(timesteps))
    timings["inversion"] = time.perf_counter() - t0
    source_latents = inverted if teacher is None else {t: teacher["inverted"][t].to(dtype) for t in timesteps}
    if teacher is None:
        x = initial_latents(models, latents, last, last_t, timesteps[0])
    else:
        x = teacher["init"].to(dtype)
    init = x
    texts = dict(source=models.embed(INVERSION_PROMPT), uncond=models.embed(NEGATIVE_PROMPT), cond=models.embed(PROMPT))
    t0 = time.perf_counter()
    steps = []
    for i, t in enumerate(timesteps):
        start = teacher[f"step{i - 1}"].to(dtype) if teacher is not None and i > 0 and "step0" in teacher else x
        x = sampling_step(models, scheduler, start, t, i, source_latents[t], positions, texts,
                          record=record if i == RECORDED_STEP else None)
        steps.append(x)
    timings["sampling"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = decode(models, x)
    timings["decode"] = time.perf_counter() - t0
    return dict(latents=latents, noise=noise, features=features, positions=positions, inverted=inverted,
                last=last, init=init, steps=steps, final=x, decoded=decoded, timesteps=timesteps, timings=timings)


# ----------------------------------------------------------------------------------------------------
# Model-independent cases: correspondences and token merging
# ----------------------------------------------------------------------------------------------------

def palette_features(generator, n, c, h, w, colours):
    """Tokens drawn from `colours` palette vectors with entries in {-1, 0, 1} and exactly 4 non-zeros."""
    palette = torch.zeros(colours, c)
    for row in palette:
        where = torch.randperm(c, generator=generator)[:4]
        row[where] = torch.randint(0, 2, (4,), generator=generator).float() * 2 - 1
    pick = torch.randint(0, colours, (n, h, w), generator=generator)
    return palette[pick].permute(0, 3, 1, 2).contiguous()


def correspondence_cases():
    g = torch.Generator().manual_seed(2406)
    features = torch.randn(5, 8, 12, 10, generator=g)
    ties = palette_features(g, 5, 8, 12, 10, colours=3)
    out, checks = {}, {}
    for name, feats, window, k in [("corr", features, 5, 3), ("corr.even", features, 2, 3), ("corr.ties", ties, 3, 2)]:
        brute = correspondences_brute_force(feats, window, k)
        sliding = correspondences_sliding_window(feats, window, k)
        checks[name] = dict(window=window, k=k, brute_equals_sliding=bool(torch.equal(brute, sliding)),
                            margin=rank_margins(feats, brute, window))
        out[f"{name}.positions"] = brute
    out["corr.features"], out["corr.ties.features"] = features, ties
    # the window matters: the same chains without a window (window = larger than the map)
    unwindowed = correspondences_brute_force(features, 2 * 12 + 1, 3)
    checks["corr"]["differs_from_unwindowed"] = int((unwindowed != out["corr.positions"]).sum())
    return out, checks


def tome_cases():
    g = torch.Generator().manual_seed(1215)
    sets = [torch.randn(15, 8, generator=g), torch.randn(15, 8, generator=g)]
    for _ in range(2):
        pal = palette_features(g, 1, 8, 1, 5, colours=5)[0, :, 0, :].T  # 5 palette vectors [5, 8]
        sets.append(pal[torch.randint(0, 5, (15,), generator=g)])
    tokens = torch.stack(sets)
    return dict(**{"tome.tokens": tokens, "tome.merged": bipartite_soft_matching(tokens, COVE_MERGE)})


# ----------------------------------------------------------------------------------------------------
# One model: fixtures, checks, sensitivity
# ----------------------------------------------------------------------------------------------------

def run_model(name, frames_u8):
    global TOME_MARGINS
    models = Models(name, torch.float32)
    record = {RECORDED_LAYER: None}
    TOME_MARGINS = []
    run = cove_edit(models, frames_u8, record=record)
    margins, TOME_MARGINS = TOME_MARGINS, None
    tensors = {
        "dift.latents": run["latents"], "dift.noise": run["noise"], "dift.features": run["features"],
        "dift.positions": run["positions"],
        "cga.input": record[RECORDED_LAYER]["input"], "cga.st": record[RECORDED_LAYER]["st"],
        "cga.output": record[RECORDED_LAYER]["output"],
        "edit.timesteps": torch.tensor(run["timesteps"], dtype=torch.float32),
        "edit.init": run["init"], "edit.final": run["final"],
        "edit.decoded": run["decoded"][DECODED_FRAMES],
    }
    for t, x in run["inverted"].items():
        tensors[f"edit.inverted.{t}"] = x
    for i, x in enumerate(run["steps"]):
        tensors[f"edit.step{i}"] = x
    # the same edit with cove_merge 0 (no token merging: no discrete decision after the correspondences)
    nomerge = cove_edit(models, frames_u8, positions=run["positions"], merge=0.0)
    for t, x in nomerge["inverted"].items():
        tensors[f"nomerge.inverted.{t}"] = x
    tensors["nomerge.init"] = nomerge["init"]
    for i, x in enumerate(nomerge["steps"]):
        tensors[f"nomerge.step{i}"] = x
    tensors["nomerge.final"] = nomerge["final"]

    # checks on this run
    checks = {}
    boundary = torch.tensor([m[0] for m in margins])
    argmax = torch.tensor([m[1] for m in margins])
    checks["tome_calls"] = len(margins)
    checks["tome_calls_with_boundary_gap_below_1e-6"] = int((boundary < 1e-6).sum())
    checks["tome_calls_with_argmax_gap_below_1e-6"] = int((argmax < 1e-6).sum())
    checks["tome_smallest_gaps"] = (boundary.min().item(), argmax.min().item())
    checks["tome_gaps_of_recorded_call"] = (min(m[0] for m in record[RECORDED_LAYER]["margins"]),
                                            min(m[1] for m in record[RECORDED_LAYER]["margins"]))
    brute = correspondences_brute_force(run["features"], COVE_WINDOW, COVE_K)
    checks["dift_brute_equals_sliding"] = bool(torch.equal(brute, run["positions"]))
    checks["dift_margin"] = rank_margins(run["features"], run["positions"], COVE_WINDOW)
    hw = run["positions"].shape[1]
    same = torch.arange(hw, dtype=torch.int32)[:, None].expand(hw, COVE_K)
    checks["dift_top1_moved"] = int(sum((run["positions"][i, :, i + 1, 0] != same[:, 0]).sum() for i in range(N_FRAMES - 1)))
    checks["dift_unwindowed_differs"] = int((correspondences_brute_force(run["features"], 17, COVE_K) != run["positions"]).sum())
    # the recorded layer: CGA vs no CGA
    layer = models.unet.get_submodule(RECORDED_LAYER).attn1
    checks["cga_changes_layer"] = (layer.to_out[0](tensors["cga.st"]) - tensors["cga.output"]).abs().max().item()
    # recompute the layer from its recorded input with this file's functions (the unit test's path)
    with torch.no_grad():
        again = CoveSelfAttention(CoveState(), RECORDED_LAYER)
        again.state.frames, again.state.positions = N_FRAMES, run["positions"]
        checks["cga_layer_recomputed"] = (again(layer, tensors["cga.input"]) - tensors["cga.output"]).abs().max().item()

    # sensitivity (not stored)
    sens = {}
    no_cga = cove_edit(models, frames_u8, positions=run["positions"], use_cga=False)
    sens["final_without_cga"] = (no_cga["final"] - run["final"]).abs().max().item()
    sens["final_with_merge_0"] = (nomerge["final"] - run["final"]).abs().max().item()
    identity = same[None, :, None, :].expand(N_FRAMES, hw, N_FRAMES, COVE_K).contiguous()
    ident = cove_edit(models, frames_u8, positions=identity)
    sens["final_with_identity_positions"] = (ident["final"] - run["final"]).abs().max().item()
    again = cove_edit(models, frames_u8)
    sens["repeat_bit_identical"] = bool(torch.equal(again["final"], run["final"]))
    models.state.use_cga, models.state.merge = True, COVE_MERGE

    # static clip
    static_frames = frames_u8[:1].expand(N_FRAMES, -1, -1, -1).contiguous()
    static = cove_edit(models, static_frames)
    tensors["static.final"] = static["final"]
    tensors["static.decoded"] = static["decoded"][:1]
    sp = static["positions"]
    checks["static_identity_top1"] = bool(all(torch.equal(sp[i, :, j, 0], same[:, 0]) for i in range(N_FRAMES) for j in range(N_FRAMES)))
    checks["static_positions_same_for_all_frames"] = bool(all(torch.equal(sp[i, :, j], sp[0, :, 1]) for i in range(N_FRAMES) for j in range(N_FRAMES) if j != i))
    checks["static_frames_max_diff"] = (static["final"] - static["final"][:1]).abs().max().item()
    checks["static_decoded_max_diff"] = (static["decoded"] - static["decoded"][:1]).abs().max().item()
    return tensors, checks, sens, dict(run, nomerge=nomerge), models


@torch.no_grad()
def fp64_report(name, frames_u8, tensors, run):
    """The same code in float64: free-running inversion from the fp32 clean latents and correspondences;
    sampling teacher-forced from the fp32 steps; DIFT features; the recorded layer from its fp32 input."""
    torch.set_default_dtype(torch.float64)
    try:
        m64 = Models(name, torch.float64)
        teacher = dict(positions=run["positions"], latents=run["latents"], inverted=run["inverted"], init=run["init"],
                       **{f"step{i}": x for i, x in enumerate(run["steps"])})
        forced = cove_edit(m64, frames_u8, teacher=teacher)
        free = cove_edit(m64, frames_u8, teacher={k: v for k, v in teacher.items() if not k.startswith("step")})
        rows = [("dift.features", tensors["dift.features"], forced["features"])]
        positions64 = correspondences_sliding_window(forced["features"], COVE_WINDOW, COVE_K)
        differing = int((positions64 != run["positions"]).sum())
        layer = m64.unet.get_submodule(RECORDED_LAYER).attn1
        st = CoveSelfAttention(CoveState(), RECORDED_LAYER)
        st.state.frames, st.state.positions = N_FRAMES, run["positions"]
        st.state.record = {RECORDED_LAYER: None}
        out = st(layer, tensors["cga.input"].double())
        rows.append(("cga.st", tensors["cga.st"], st.state.record[RECORDED_LAYER]["st"]))
        rows.append(("cga.output", tensors["cga.output"], out))
        rows.append(("tome.merged", tensors["tome.merged"], bipartite_soft_matching(tensors["tome.tokens"].double(), COVE_MERGE)))
        for t in sorted(run["inverted"]):
            rows.append((f"edit.inverted.{t}", run["inverted"][t], free["inverted"][t]))
        for i, x in enumerate(forced["steps"]):
            rows.append((f"edit.step{i} (forced)", run["steps"][i], x))
        for i, x in enumerate(free["steps"]):
            rows.append((f"edit.step{i} (free-running)", run["steps"][i], x))
        rows.append(("edit.decoded (free-running)", run["decoded"], free["decoded"]))
        nm = run["nomerge"]
        nm64 = cove_edit(m64, frames_u8, merge=0.0, teacher=dict(positions=run["positions"], latents=run["latents"],
                                                               inverted=nm["inverted"], init=nm["init"]))
        for t in sorted(nm["inverted"]):
            rows.append((f"nomerge.inverted.{t}", nm["inverted"][t], nm64["inverted"][t]))
        for i, x in enumerate(nm64["steps"]):
            rows.append((f"nomerge.step{i} (free-running)", nm["steps"][i], x))
    finally:
        torch.set_default_dtype(torch.float32)
    print("    fp32 vs fp64 (same code): max abs diff / max|fp64|")
    for k, a, b in rows:
        print(f"      {k:30s} {(a.double() - b).abs().max().item():.2e} / {b.abs().max().item():.3f}")
    print(f"      dift.positions from fp64 features: {differing} of {run['positions'].numel()} entries differ")


# ----------------------------------------------------------------------------------------------------
# Reporting and main
# ----------------------------------------------------------------------------------------------------

def describe(tensors):
    for k in sorted(tensors):
        t = tensors[k].double()
        print(f"    {k:24s} {str(list(t.shape)):18s} {str(tensors[k].dtype).replace('torch.', ''):8s} "
              f"mean {t.mean():+9.4f} std {t.std() if t.numel() > 1 else 0:8.4f} max|.| {t.abs().max():9.4f}")


def save(tensors, path, info):
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int32), (k, v.dtype)
        assert torch.isfinite(v.double()).all(), k
    save_file(tensors, path, metadata={"info": json.dumps(info, sort_keys=True)})
    print(f"    wrote {path} ({os.path.getsize(path) / 1e3:.1f} kB, {len(tensors)} tensors)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "expected"))
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--skip-fp64", action="store_true", help="skip the fp32-vs-fp64 report")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.makedirs(args.out, exist_ok=True)

    frames_u8 = load_clip_frames(N_FRAMES)
    corr, corr_checks = correspondence_cases()
    tome = tome_cases()
    print("== correspondences (model-independent)")
    for k, v in corr_checks.items():
        print(f"    {k}: {v}")
        assert v["brute_equals_sliding"]
    assert corr_checks["corr.ties"]["margin"] == 0.0  # exact ties present
    common = {
        "generator": "Tests/Fixtures/generate_cove_fixtures.py",
        "decisions": "Tests/Fixtures/COVE-DECISIONS.md",
        "torch": torch.__version__.split("+")[0], "diffusers": diffusers.__version__,
        "transformers": transformers.__version__, "threads": args.threads,
        "frames": "tokenflow-frames.safetensors frames 0..5 (static case: frame 0 six times)",
        "n_frames": N_FRAMES, "steps": STEPS, "inversion_steps": INVERSION_STEPS, "guidance_scale": GUIDANCE,
        "cove_k": COVE_K, "cove_window": COVE_WINDOW, "cove_merge": COVE_MERGE, "cove_timestep": COVE_TIMESTEP,
        "pnp_f_t": PNP_F_T, "pnp_attn_t": PNP_ATTN_T, "seed": SEED, "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT, "inversion_prompt": INVERSION_PROMPT, "dift_prompt": DIFT_PROMPT,
        "dift_block": f"up_blocks.{DIFT_BLOCK} output", "cga_blocks": sorted(CGA_BLOCKS),
        "qk_injection_blocks": sorted(QK_INJECTION_BLOCKS), "conv_injection_resnets": CONV_INJECTION_RESNETS,
        "recorded_layer": RECORDED_LAYER + ".attn1", "decoded_frames": DECODED_FRAMES,
        "positions_layout": "[i, p, j, k]: flat position (y * W + x) in frame j of the k-th correspondence of token p "
                            "of frame i; j == i: p repeated K times",
        "corr_cases": {k: dict(window=v["window"], k=v["k"]) for k, v in corr_checks.items()},
        "tome": "a = even positions, b = odd; r = floor(0.5 * 15) = 7; output [unmerged a ascending, b]",
        "vae_scale": 0.18215,
    }
    for name in args.models:
        print(f"== {name}")
        t0 = time.perf_counter()
        tensors, checks, sens, run, models = run_model(name, frames_u8)
        elapsed = time.perf_counter() - t0
        tensors.update(corr)
        tensors.update(tome)
        describe(tensors)
        for k, v in checks.items():
            print(f"    check {k}: {v}")
        for k, v in sens.items():
            print(f"    sensitivity {k}: {v}")
        assert checks["dift_brute_equals_sliding"] and checks["static_identity_top1"]
        assert checks["static_frames_max_diff"] <= 1e-6 and checks["cga_layer_recomputed"] == 0.0
        assert sens["repeat_bit_identical"]
        timings = run["timings"]
        la = os.getloadavg()
        print(f"    # load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
        print(f"    cove_reference_seconds model={name} frames={N_FRAMES} steps={STEPS} inversion_steps={INVERSION_STEPS} "
              f"threads={torch.get_num_threads()} " + " ".join(f"{k}={v:.3f}" for k, v in timings.items())
              + f" (whole model incl. sensitivity runs {elapsed:.1f})")
        info = dict(common, model=f"models/{name}", weights=("float16" if MODELS[name] else "float32") + " on disk, run in float32",
                    timesteps=run["timesteps"], conv_injection_timesteps=run["timesteps"][:int(STEPS * PNP_F_T + 1e-4)],
                    qk_injection_timesteps=run["timesteps"][:int(STEPS * PNP_ATTN_T + 1e-4)],
                    heads_at_recorded_layer=models.unet.get_submodule(RECORDED_LAYER).attn1.heads)
        save(tensors, os.path.join(args.out, f"cove-{name}.safetensors"), info)
        if not args.skip_fp64:
            fp64_report(name, frames_u8, tensors, run)


if __name__ == "__main__":
    main()
