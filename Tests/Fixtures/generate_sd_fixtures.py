"""Generate the tiny Stable Diffusion test models and their diffusers reference outputs.

Usage (from the repository root, with the pinned venv of Tests/Fixtures/requirements.txt):

    venv/bin/python Tests/Fixtures/generate_sd_fixtures.py --out Tests/Fixtures

Writes, under --out:
    models/sd2-tiny/   SD2.x-style pipeline folder (linear proj_in/out, heads list, gelu CLIP, pad "!"),
                       weights F32: diffusion_pytorch_model.safetensors / model.safetensors
    models/sd15-tiny/  SD1.5-style pipeline folder (1x1-conv proj_in/out, int heads, quick_gelu CLIP,
                       pad <|endoftext|>), weights F16 with the diffusers "fp16" variant names
    expected/sd2-tiny.safetensors, expected/sd15-tiny.safetensors   reference outputs (all F32)

The models have Stable Diffusion's exact block structure (4 UNet levels, 3 cross-attention down blocks,
8x VAE, CLIP with causal mask and final layer norm) but tiny widths, and random weights that are then
perturbed (see `perturb_`) so that no weight is left at an "identity" value (zero bias, unit norm
scale) that would hide a missing or misplaced op in the Swift port.

Every expected tensor is produced by the diffusers / transformers modules themselves (CLIPTextModel,
UNet2DConditionModel.forward, AutoencoderKL.encode/decode, DDIMScheduler.set_timesteps/step/add_noise),
run on CPU in fp32 on the models *reloaded from the folders just written* (so the reference is computed
from exactly the bytes the Swift loader reads; for the F16 model that means F16-rounded weights upcast
to fp32, which is what the Swift loader does too).

The script is deterministic: every section seeds torch with its own fixed seed, so reordering or adding
sections does not change the others' tensors. Re-running it rewrites byte-identical safetensors files
(safetensors serialises tensors in sorted-name order) as long as the pinned versions are used.
"""
import argparse
import importlib.util
import json
import os
import shutil
import tempfile

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

# ----------------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------------

# CLIP width = UNet cross_attention_dim. The 49408 x CLIP_HIDDEN token embedding dominates the fixture size
# (32: 6.3 MB in F32 + 3.2 MB in F16; 16 would halve that).
CLIP_HIDDEN = 32

# Shared UNet structure: SD's 4 levels (3 CrossAttnDownBlock2D + DownBlock2D and the mirror image on the
# way up), 2 resnets per level, UNetMidBlock2DCrossAttn (diffusers' default mid block), sinusoidal time
# embedding with flip_sin_to_cos=True / freq_shift=0 as SD ships it.
# Widths: SD's (320, 640, 1280, 1280) has a channel change at levels 1 and 2; (8, 16, 16, 16) keeps a
# channel change (so the conv_shortcut of a resnet and the uneven skip concatenations of the up blocks are
# exercised) at a size that fits the repository budget: (32, 64, 64, 64) would be 3.2M UNet + 1.7M VAE
# parameters, ~30 MB for the two models; (8, 16, 16, 16) is 0.22M + 0.11M, ~2 MB. norm_num_groups=4 keeps
# more than one channel per group everywhere (2 or 4; SD has 10+), so a wrong channel-to-group assignment
# shows up.
UNET_COMMON = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(8, 16, 16, 16),
    layers_per_block=2,
    norm_num_groups=4,
    norm_eps=1e-5,
    cross_attention_dim=CLIP_HIDDEN,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
    mid_block_scale_factor=1,
    center_input_sample=False,
    upcast_attention=False,
)

# SD2.x: attention_head_dim is a per-level *list* and means the number of heads (a diffusers naming
# accident kept for compatibility): level widths 8/16/16/16 with 2/4/4/4 heads -> head dims 4/4/4/4
# (reading it as a head dim would give 4 heads of 2 at level 0: the outputs would differ).
# Linear proj_in/proj_out in the Transformer2DModel.
UNET_SD2 = dict(UNET_COMMON, attention_head_dim=[2, 4, 4, 4], use_linear_projection=True)
# SD1.5: a single int, also the number of heads (SD1.5: 8 heads of dim 40/80/160/160); here 4 heads of
# dim 2/4/4/4. 1x1 conv proj_in/out.
UNET_SD15 = dict(UNET_COMMON, attention_head_dim=4, use_linear_projection=False)

# SD's VAE: 4 levels (3 downsamples -> 8x), 2 resnets per level in the encoder (3 per level in the decoder,
# diffusers adds one), a single-head self-attention in each mid block, 2*latent_channels encoder output.
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 16, 16, 16),  # SD: (128, 256, 512, 512); same reasoning as the UNet's
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=4,
    sample_size=64,
    scaling_factor=0.18215,
)

# CLIP text encoder: the real 49408-token vocabulary (so the real tokenizer can be used), 77 positions,
# tiny width. bos/eos are the real token ids; pad_token_id=1 is what SD2's text_encoder/config.json says
# (it is unused by the model). eos_token_id != 2 makes transformers pool at the first eos token.
CLIP_COMMON = dict(
    vocab_size=49408,
    hidden_size=CLIP_HIDDEN,
    intermediate_size=2 * CLIP_HIDDEN,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    layer_norm_eps=1e-5,
    projection_dim=CLIP_HIDDEN,  # unused by CLIPTextModel (no projection head)
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)
CLIP_SD2 = dict(CLIP_COMMON, hidden_act="gelu")  # OpenCLIP ViT-H text tower: exact (erf) GELU
CLIP_SD15 = dict(CLIP_COMMON, hidden_act="quick_gelu")  # OpenAI CLIP ViT-L: x * sigmoid(1.702 x)

# DDIMScheduler exactly as stable-diffusion-2-1-base ships it (scheduler/scheduler_config.json), minus the
# PNDM leftover key "skip_prk_steps" that DDIMScheduler does not register.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    trained_betas=None,
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
    timestep_spacing="leading",
)

MODELS = {
    # name: (unet config, clip config, tokenizer pad token, weight dtype, diffusers variant, seed)
    "sd2-tiny": (UNET_SD2, CLIP_SD2, "!", torch.float32, None, 1234),
    "sd15-tiny": (UNET_SD15, CLIP_SD15, "<|endoftext|>", torch.float16, "fp16", 1515),
}

# Prompts for the text-encoder fixture: empty (all padding), ordinary, and one longer than 77 tokens that
# must be truncated to bos + 75 tokens + eos. Plain ASCII with case, punctuation, digits and a contraction:
# transformers uses its BasicTokenizer clean-up when ftfy is not installed (it is not pinned), which
# agrees with ftfy on this text.
PROMPTS = [
    "",
    "A photo of an astronaut riding a horse on Mars, 4k, highly-detailed!",
    ", ".join(
        [
            "a watercolor painting of a lighthouse on a rocky cliff at sunset",
            "dramatic clouds", "crashing waves", "seagulls in the sky", "warm golden light",
            "it's a masterpiece by an award-winning artist", "trending on artstation in 2023",
            "ultra detailed", "8k resolution", "sharp focus", "vivid colors", "soft shadows",
            "cinematic composition", "wide angle lens", "volumetric fog", "film grain",
        ]
    ),
]
LOOP_PROMPT = "a photo of a cat"
LOOP_NEGATIVE = ""
GUIDANCE = 7.5
LOOP_STEPS = 10
UNET_TIMESTEPS = [1, 500, 981]


# ----------------------------------------------------------------------------------------------------
# Weight perturbation
# ----------------------------------------------------------------------------------------------------

NORM_TYPES = (torch.nn.GroupNorm, torch.nn.LayerNorm)


@torch.no_grad()
def perturb_(model, seed):
    """Overwrite every parameter with seeded random values of a sensible scale.

    Default init leaves every GroupNorm/LayerNorm at weight 1 / bias 0 and (transformers' CLIP init) all
    CLIP biases at 0; a Swift port that forgot a bias or a norm's affine transform, or swapped the norm's
    scale and shift, would still match such a model. Here, with z ~ N(0, 1):
      - norm scales 1 + 0.1 z, norm shifts 0.1 z
      - other biases 0.05 z
      - matrices / conv kernels z / sqrt(fan_in) (variance preserving), so activations stay O(1) through
        the depth of the network (residual streams grow slowly, norms renormalise)
      - embeddings (CLIP token / position) 0.5 z: their output is layer-normed anyway
    Parameters are visited in named_parameters() order, so the result depends only on the seed.
    """
    g = torch.Generator().manual_seed(seed)
    norm_params = set()
    embedding_params = set()
    for module in model.modules():
        if isinstance(module, NORM_TYPES):
            norm_params.update(id(p) for p in module.parameters(recurse=False))
        if isinstance(module, torch.nn.Embedding):
            embedding_params.update(id(p) for p in module.parameters(recurse=False))
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if id(p) in norm_params:
            value = 1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
        elif id(p) in embedding_params:
            value = 0.5 * noise
        elif p.dim() >= 2:
            fan_in = p[0].numel()
            value = noise / fan_in**0.5
        else:
            value = 0.05 * noise
        p.copy_(value.to(p.dtype))


# ----------------------------------------------------------------------------------------------------
# Model folder
# ----------------------------------------------------------------------------------------------------


def make_tokenizer_folder(tokenizer_dir, vocab_dir, pad_token):
    """Write tokenizer/ as CLIPTokenizer.save_pretrained does, but with vocab.json/merges.txt as relative
    symlinks to the shared real CLIP vocabulary (Tests/Fixtures/clip-tokenizer), so the 2.5 MB of
    vocabulary is stored once in the repository."""
    with tempfile.TemporaryDirectory() as tmp:
        tok = CLIPTokenizer(
            os.path.join(vocab_dir, "vocab.json"),
            os.path.join(vocab_dir, "merges.txt"),
            pad_token=pad_token,
            model_max_length=77,
        )
        tok.save_pretrained(tmp)
        if os.path.exists(tokenizer_dir):
            shutil.rmtree(tokenizer_dir)
        os.makedirs(tokenizer_dir)
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(tmp, name), os.path.join(tokenizer_dir, name))
        # vocab_dir is <out>/clip-tokenizer and tokenizer_dir is <out>/models/<name>/tokenizer.
        for name in ("vocab.json", "merges.txt"):
            target = os.path.relpath(os.path.join(vocab_dir, name), tokenizer_dir)
            assert target == os.path.join("..", "..", "..", "clip-tokenizer", name), target
            os.symlink(target, os.path.join(tokenizer_dir, name))


def build_and_save(name, out_dir, vocab_dir):
    """Build one tiny pipeline, perturb its weights and save it in diffusers layout. Returns the folder."""
    unet_cfg, clip_cfg, pad_token, dtype, variant, seed = MODELS[name]
    folder = os.path.join(out_dir, "models", name)
    if os.path.exists(folder):
        shutil.rmtree(folder)

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**clip_cfg))
    perturb_(unet, seed + 1)
    perturb_(vae, seed + 2)
    perturb_(text_encoder, seed + 3)
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG)
    tokenizer = CLIPTokenizer(
        os.path.join(vocab_dir, "vocab.json"), os.path.join(vocab_dir, "merges.txt"),
        pad_token=pad_token, model_max_length=77,
    )

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    # F16 models are converted (rounded) here; the references are computed from the reloaded weights.
    pipe.to(dtype=dtype)
    # The token embedding (49408 x hidden: nearly all of a tiny text encoder) is stored F16 in every model, so
    # that the F32 model's files stay small too; rounded here, so the references (computed from the reloaded
    # weights, in float32) see exactly what the files hold.
    embedding = text_encoder.text_model.embeddings.token_embedding
    embedding.weight.data = embedding.weight.data.half()
    pipe.save_pretrained(folder, safe_serialization=True, variant=variant)
    # Replace the tokenizer files save_pretrained copied with the symlinked layout.
    make_tokenizer_folder(os.path.join(folder, "tokenizer"), vocab_dir, pad_token)
    return folder


def load(folder, variant):
    """Reload the components from disk in fp32 (F16 files are upcast on load, as the Swift loader does)."""
    kw = dict(torch_dtype=torch.float32, variant=variant)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw).eval()
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw).eval()
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw).eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    for m in (unet, vae, text_encoder):
        assert all(p.dtype == torch.float32 for p in m.parameters()), "reloaded weights must be fp32"
    return unet, vae, text_encoder, tokenizer, scheduler


# ----------------------------------------------------------------------------------------------------
# Expected outputs
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def compute_expected(unet, vae, text_encoder, tokenizer, scheduler):
    out = {}

    # --- text encoder -------------------------------------------------------------------------------
    # SD tokenizes with padding to 77 and truncation, and feeds input_ids only (no attention mask: the
    # padding tokens are attended to, under the causal mask). Ids are stored as F32 (exact below 2^24) so
    # that a reader supporting only float dtypes can read every tensor of the file.
    ids = tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt").input_ids
    enc = text_encoder(ids)
    out["text.input_ids"] = ids.float()
    out["text.last_hidden_state"] = enc.last_hidden_state
    out["text.pooler_output"] = enc.pooler_output  # final-LN state at the first eos; SD itself does not use it

    # --- UNet ---------------------------------------------------------------------------------------
    # Non-square 16x8 latent (2x1 at the bottom level), batch 2, text states of prompts 1 and 2.
    torch.manual_seed(100)
    sample = torch.randn(2, 4, 16, 8)
    ehs = enc.last_hidden_state[1:3].clone()
    out["unet.sample"] = sample
    out["unet.encoder_hidden_states"] = ehs
    for t in UNET_TIMESTEPS:
        out[f"unet.t{t}.out"] = unet(sample, t, encoder_hidden_states=ehs).sample
    # One timestep per batch element (TokenFlow's batched passes share t, but inversion tests may not).
    per_sample_t = torch.tensor([1, 981])
    out["unet.per_sample.timesteps"] = per_sample_t.float()
    out["unet.per_sample.out"] = unet(sample, per_sample_t, encoder_hidden_states=ehs).sample

    # --- VAE ----------------------------------------------------------------------------------------
    torch.manual_seed(200)
    image = torch.rand(1, 3, 64, 48) * 2 - 1  # non-square, in [-1, 1] like 2*frame-1
    out["vae.encode.input"] = image
    out["vae.encode.mean"] = vae.encode(image).latent_dist.mean  # unscaled (no * scaling_factor)
    latents = torch.randn(1, 4, 8, 6)
    out["vae.decode.input"] = latents
    out["vae.decode.out"] = vae.decode(latents).sample  # raw decoder output, not clamped

    # --- DDIM scheduler -----------------------------------------------------------------------------
    out["ddim.alphas_cumprod"] = scheduler.alphas_cumprod.float()
    out["ddim.final_alpha_cumprod"] = scheduler.final_alpha_cumprod.float().reshape(1)
    for n in (LOOP_STEPS, 50):
        scheduler.set_timesteps(n)
        out[f"ddim.timesteps{n}"] = scheduler.timesteps.float()
    out["ddim.timesteps"] = out[f"ddim.timesteps{LOOP_STEPS}"]

    # Single steps (eta 0) for both prediction types on random inputs, at the first, a middle and the last
    # timestep of the 10-step schedule (the last one uses final_alpha_cumprod for its previous alpha).
    for pred_type, key, seed in (("epsilon", "eps", 300), ("v_prediction", "vpred", 301)):
        sched = DDIMScheduler.from_config(scheduler.config, prediction_type=pred_type)
        sched.set_timesteps(LOOP_STEPS)
        torch.manual_seed(seed)
        for t in (int(sched.timesteps[0]), int(sched.timesteps[LOOP_STEPS // 2]), int(sched.timesteps[-1])):
            x = torch.randn(1, 4, 16, 8)
            model_output = torch.randn(1, 4, 16, 8)
            res = sched.step(model_output, t, x, eta=0.0)
            out[f"ddim.{key}.t{t}.sample"] = x
            out[f"ddim.{key}.t{t}.model_output"] = model_output
            out[f"ddim.{key}.t{t}.prev_sample"] = res.prev_sample
            out[f"ddim.{key}.t{t}.pred_original_sample"] = res.pred_original_sample

    # add_noise: one timestep per batch element.
    torch.manual_seed(400)
    original = torch.randn(3, 4, 16, 8)
    noise = torch.randn(3, 4, 16, 8)
    noise_t = torch.tensor([1, 500, 999])
    out["ddim.add_noise.original"] = original
    out["ddim.add_noise.noise"] = noise
    out["ddim.add_noise.timesteps"] = noise_t.float()
    out["ddim.add_noise.out"] = scheduler.add_noise(original, noise, noise_t)

    # Text-to-image sampling loop with classifier-free guidance, as StableDiffusionPipeline does it
    # (batch [uncond, cond], eps = u + g (c - u), DDIM eta 0), written out so every intermediate is kept.
    loop_ids = tokenizer([LOOP_NEGATIVE, LOOP_PROMPT], padding="max_length", truncation=True, max_length=77,
                         return_tensors="pt").input_ids
    loop_ehs = text_encoder(loop_ids).last_hidden_state
    out["ddim.loop.input_ids"] = loop_ids.float()
    out["ddim.loop.encoder_hidden_states"] = loop_ehs
    torch.manual_seed(500)
    init = torch.randn(1, 4, 16, 8) * scheduler.init_noise_sigma
    out["ddim.loop.init"] = init
    out["ddim.loop.guidance"] = torch.tensor([GUIDANCE])
    out.update(sampling_loop(unet, scheduler, loop_ehs, init))

    # clone(): some entries alias each other (e.g. ddim.loop.final is ddim.loop.step9); safetensors refuses
    # to save shared storage.
    return {k: v.detach().to(torch.float32).clone().contiguous() for k, v in out.items()}


@torch.no_grad()
def sampling_loop(unet, scheduler, encoder_hidden_states, init):
    """LOOP_STEPS DDIM steps (eta 0) with classifier-free guidance from latent `init`, as
    StableDiffusionPipeline runs them; returns every guided noise prediction and latent."""
    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(LOOP_STEPS)
    out = {}
    x = init
    for i, t in enumerate(sched.timesteps):
        model_in = sched.scale_model_input(torch.cat([x, x]), t)
        eps_u, eps_c = unet(model_in, t, encoder_hidden_states=encoder_hidden_states).sample.chunk(2)
        eps = eps_u + GUIDANCE * (eps_c - eps_u)
        x = sched.step(eps, t, x, eta=0.0).prev_sample
        out[f"ddim.loop.noise_pred{i}"] = eps  # guided noise prediction used at step i
        out[f"ddim.loop.step{i}"] = x  # latent after step i
    out["ddim.loop.final"] = x
    return out


@torch.no_grad()
def fp64_discrepancy(unet, vae, text_encoder, scheduler, expected):
    """Max |fp32 - fp64| of the network outputs: the floor for any fp32 implementation's error, printed
    to justify the tolerances the Swift tests use (see README)."""
    import copy

    u, v, te = (copy.deepcopy(m).double() for m in (unet, vae, text_encoder))
    e = {k: t.double() for k, t in expected.items()}
    res = {}
    # transformers builds CLIP's causal mask with torch.full in the *default* dtype; under fp64 weights the
    # fp64 minimum overflows fp32, so switch the default dtype for this call.
    torch.set_default_dtype(torch.float64)
    try:
        res["text.last_hidden_state"] = te(e["text.input_ids"].long()).last_hidden_state
    finally:
        torch.set_default_dtype(torch.float32)
    for t in UNET_TIMESTEPS:
        res[f"unet.t{t}.out"] = u(e["unet.sample"], t, encoder_hidden_states=e["unet.encoder_hidden_states"]).sample
    res["vae.encode.mean"] = v.encode(e["vae.encode.input"]).latent_dist.mean
    res["vae.decode.out"] = v.decode(e["vae.decode.input"]).sample
    # The guided loop amplifies per-step differences (g = 7.5): this shows by how much.
    loop = sampling_loop(u, scheduler, e["ddim.loop.encoder_hidden_states"], e["ddim.loop.init"])
    res["ddim.loop.noise_pred0"] = loop["ddim.loop.noise_pred0"]
    res["ddim.loop.final"] = loop["ddim.loop.final"]
    for k, ref in res.items():
        diff = (expected[k].double() - ref).abs()
        rel = diff.max() / ref.abs().max()
        print(f"    fp32 vs fp64 {k:32s} max abs {diff.max():.2e}  max abs / max|ref| {rel:.2e}")


def describe(tensors):
    for k in sorted(tensors):
        t = tensors[k]
        print(f"    {k:40s} {str(list(t.shape)):18s} mean {t.mean():+.4f} std {t.std() if t.numel() > 1 else 0:.4f}"
              f" max|.| {t.abs().max():.4f}")


def sanity_check(tensors):
    """Fail loudly if a network output is degenerate (vanishing, exploding or non-finite)."""
    for k, t in tensors.items():
        assert torch.isfinite(t).all(), k
    for k in ["text.last_hidden_state", "unet.t1.out", "unet.t500.out", "unet.t981.out",
              "vae.encode.mean", "vae.decode.out", "ddim.loop.final"]:
        std = tensors[k].std().item()
        assert 0.05 < std < 20, f"{k} is badly scaled: std {std}"


@torch.no_grad()
def sensitivity_check(unet, tensors):
    """The inputs that condition the UNet must visibly change its output, or a Swift port that dropped the
    time embedding or the cross-attention would still match: compare t=1 vs t=981, and the text states of
    two different prompts, relative to the output scale."""
    sample, ehs = tensors["unet.sample"], tensors["unet.encoder_hidden_states"]
    ref = tensors["unet.t500.out"]
    other_text = tensors["text.last_hidden_state"][0:1].expand_as(ehs)  # the empty prompt for both
    d_time = (tensors["unet.t1.out"] - tensors["unet.t981.out"]).std() / ref.std()
    d_text = (unet(sample, 500, encoder_hidden_states=other_text).sample - ref).std() / ref.std()
    print(f"    sensitivity: time (t=1 vs t=981) {d_time:.3f}, text (prompt vs empty) {d_text:.3f}"
          " [std of output change / std of output]")
    assert d_time > 0.05 and d_text > 0.05, "time embedding or cross-attention has almost no effect"


def folder_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)), help="Tests/Fixtures")
    ap.add_argument("--skip-fp64", action="store_true", help="skip the fp32-vs-fp64 error report")
    args = ap.parse_args()

    # With ftfy installed, CLIPTokenizer cleans text with ftfy.fix_text instead of its BasicTokenizer
    # fallback, and the ids would depend on ftfy's version; the Swift tokenizer follows the fallback.
    if importlib.util.find_spec("ftfy") is not None:
        raise SystemExit("uninstall ftfy: the expected token ids are defined without it")
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    out_dir = os.path.abspath(args.out)
    vocab_dir = os.path.join(out_dir, "clip-tokenizer")
    os.makedirs(os.path.join(out_dir, "expected"), exist_ok=True)

    for name, (_, _, _, dtype, variant, _) in MODELS.items():
        print(f"== {name}")
        folder = build_and_save(name, out_dir, vocab_dir)
        unet, vae, text_encoder, tokenizer, scheduler = load(folder, variant)
        expected = compute_expected(unet, vae, text_encoder, tokenizer, scheduler)
        sanity_check(expected)
        sensitivity_check(unet, expected)
        path = os.path.join(out_dir, "expected", f"{name}.safetensors")
        # One metadata entry holding sorted JSON: safetensors writes the metadata map in hash order, so
        # several keys would make re-generated files differ byte-wise from run to run.
        info = {
            "generator": "Tests/Fixtures/generate_sd_fixtures.py",
            "model": f"models/{name}",
            "weights": f"{str(dtype).replace('torch.', '')} on disk, upcast to float32",
            "torch": torch.__version__.split("+")[0],
            "diffusers": __import__("diffusers").__version__,
            "transformers": __import__("transformers").__version__,
            "prompts": PROMPTS,
            "loop_prompt": LOOP_PROMPT,
            "loop_negative_prompt": LOOP_NEGATIVE,
        }
        save_file(expected, path, metadata={"info": json.dumps(info, sort_keys=True)})
        describe(expected)
        if not args.skip_fp64:
            fp64_discrepancy(unet, vae, text_encoder, scheduler, expected)
        print(f"    model folder {folder_size(folder) / 1e6:.2f} MB, expected {os.path.getsize(path) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
