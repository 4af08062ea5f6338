"""Write the tiny Stable Diffusion models also as single-file checkpoints in the original (LDM) layout.

Usage (from the repository root, with the pinned venv of Tests/Fixtures/requirements.txt):

    venv/bin/python Tests/Fixtures/generate_single_file_fixtures.py --models Tests/Fixtures/models
    venv/bin/python Tests/Fixtures/generate_single_file_fixtures.py --check-converted DIR --like sd2-tiny

The first form reads the diffusers folders written by generate_sd_fixtures.py and writes, beside them:
    sd2-tiny.safetensors    SD 2.x layout (OpenCLIP text tower with fused q/k/v), F32 like the folder
    sd15-tiny.safetensors   SD 1.x layout (transformers CLIP text tower), F16 like the folder's fp16 variant

Every tensor is the folder's tensor, bit for bit, under the name (and, for fused q/k/v and the VAE's 1x1
convolutions, the shape) the original repositories store it under: CompVis/stable-diffusion (SD 1.x) and
Stability-AI/stablediffusion (SD 2.x) save `LatentDiffusion.state_dict()`, i.e.
    model.diffusion_model.*   ldm.modules.diffusionmodules.openaimodel.UNetModel
    first_stage_model.*       ldm.models.autoencoder.AutoencoderKL (diffusionmodules.model.Encoder/Decoder)
    cond_stage_model.*        FrozenCLIPEmbedder (.transformer = transformers' CLIPTextModel) for SD 1.x,
                              FrozenOpenCLIPEmbedder (.model = open_clip's CLIP without .visual) for SD 2.x
plus the DDPM schedule buffers (betas, alphas_cumprod, ...) and the EMA bookkeeping buffers
(model_ema.decay, model_ema.num_updates) that the released EMA-only checkpoints still carry.

The diffusers -> LDM mapping below is written from those modules' construction order (the `*_modules`
functions), not taken from diffusers. It is then CHECKED against diffusers 0.31's own single-file loader,
which is independent code going the other way (LDM -> diffusers):
  1. `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint` /
     `convert_open_clip_checkpoint` on the written file must give back every folder tensor (same name,
     dtype, shape and bits);
  2. `StableDiffusionPipeline.from_single_file(file, config=<folder>, local_files_only=True)` (the folder
     supplies the configs, so nothing is fetched) must load modules whose state dicts equal the folder's.

What the weights cannot show. An LDM checkpoint holds weights only; the original repositories keep the
hyperparameters in a YAML config, fixed per family (v1-inference.yaml: 8 heads, v2-inference.yaml: heads of
64 channels; 32 groups in every GroupNorm, hard-coded in ldm's `Normalize`). The tiny models use other
values (4 groups; heads of 4 or 2 channels) that no original config can express, so each file carries
them (and the default sample sizes, 8 and 64 instead of SD's 64 and 512) in its safetensors metadata, as diffusers config entries the Swift loader merges over what it reads
from the shapes: `tokenflow.unet_config`, `tokenflow.vae_config`, `tokenflow.text_encoder_config` (JSON
objects). Real checkpoints have no such keys and get the families' standard values. Nothing says what the
SD 2.x file predicts (as with the released v2 files), so it has no `modelspec.prediction_type`.

SD 2.x's text tower. OpenCLIP ViT-H has 24 resblocks, but SD 2.x conditions on the penultimate one
(FrozenOpenCLIPEmbedder(layer="penultimate") runs resblocks[:-1], then ln_final), and diffusers' converted
text encoder has 23 layers: it drops resblocks.23 (`SD_2_TEXT_ENCODER_KEYS_TO_IGNORE`, which spells out the
index 23) and uses ln_final as final_layer_norm. The tiny folder's 2 layers are therefore written as 3
resblocks, the last one holding seeded random weights that nothing uses (a loader must skip the last
resblock, not resblock 23). diffusers' converter, having 23 hard-coded, maps that extra block to
`text_model.encoder.layers.2.*` for the tiny file; check 1 requires those extra names to be exactly that
block's, and nothing else, and check 2 sees them as the unused keys diffusers warns about.
`text_projection` ([width, width], random) and `logit_scale` (log(1/0.07)) are stored as open_clip does.

The second form checks a folder written by `tokenflow convert FILE DIR`: diffusers must load it
(`StableDiffusionPipeline.from_pretrained(DIR)`), and its weights, component configs (as diffusers reads
them), tokenizer ids and scheduler must equal the named tiny folder's.

Deterministic: re-running with the pins rewrites byte-identical files (written by `write_safetensors`: tensors
in name order, metadata keys sorted).
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
from safetensors.torch import load_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the folders hold every config; never ask the hub

# name: (text tower, single-file dtype, folder weight-file suffix, seed of the unused last resblock)
MODELS = {
    "sd2-tiny": ("open_clip", torch.float32, "", 2024),
    "sd15-tiny": ("clip", torch.float16, ".fp16", None),
}

# Config entries the weights cannot show, for the metadata (see the docstring). The values are the folders'.
HIDDEN_CONFIG_KEYS = {
    "unet": ["attention_head_dim", "norm_num_groups", "sample_size"],
    "vae": ["norm_num_groups", "sample_size"],
    "text_encoder": ["num_attention_heads"],
}

# ----------------------------------------------------------------------------------------------------
# diffusers -> LDM module correspondence, in the original modules' construction order
# ----------------------------------------------------------------------------------------------------

# ldm's ResBlock: in_layers = (GroupNorm, SiLU, conv), emb_layers = (SiLU, Linear),
# out_layers = (GroupNorm, SiLU, Dropout, conv), skip_connection (1x1 conv when the width changes).
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
# diffusionmodules.model.ResnetBlock (the VAE's): same names except the 1x1 shortcut.
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
# diffusionmodules.model.AttnBlock: norm, then q/k/v/proj_out as 1x1 Conv2d ([C, C, 1, 1] weights).
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
# SpatialTransformer / BasicTransformerBlock / CrossAttention use diffusers' names already.
SAME = {}


def unet_modules(config):
    """(diffusers module, LDM module, renames inside it) for openaimodel.UNetModel: time_embed
    (Linear, SiLU, Linear); input_blocks[0] = conv_in; per level, num_res_blocks x [ResBlock (+
    SpatialTransformer)] then a Downsample (`.op`) except on the last level; middle_block = ResBlock,
    SpatialTransformer, ResBlock; output_blocks per level from the deepest, num_res_blocks + 1 x [ResBlock
    (+ SpatialTransformer)], the last of each level but the shallowest ending in an Upsample (`.conv`);
    out = (GroupNorm, SiLU, conv)."""
    per_level = config["layers_per_block"]
    levels = len(config["block_out_channels"])
    modules = [("time_embedding.linear_1", "time_embed.0", SAME), ("time_embedding.linear_2", "time_embed.2", SAME),
               ("conv_in", "input_blocks.0.0", SAME)]
    index = 1
    for level in range(levels):
        attention = config["down_block_types"][level] == "CrossAttnDownBlock2D"
        for layer in range(per_level):
            modules.append((f"down_blocks.{level}.resnets.{layer}", f"input_blocks.{index}.0", UNET_RESNET))
            if attention:
                modules.append((f"down_blocks.{level}.attentions.{layer}", f"input_blocks.{index}.1", SAME))
            index += 1
        if level != levels - 1:
            modules.append((f"down_blocks.{level}.downsamplers.0.conv", f"input_blocks.{index}.0.op", SAME))
            index += 1
    modules += [("mid_block.resnets.0", "middle_block.0", UNET_RESNET), ("mid_block.attentions.0", "middle_block.1", SAME),
                ("mid_block.resnets.1", "middle_block.2", UNET_RESNET)]
    index = 0
    for up in range(levels):
        attention = config["up_block_types"][up] == "CrossAttnUpBlock2D"
        for layer in range(per_level + 1):
            modules.append((f"up_blocks.{up}.resnets.{layer}", f"output_blocks.{index}.0", UNET_RESNET))
            if attention:
                modules.append((f"up_blocks.{up}.attentions.{layer}", f"output_blocks.{index}.1", SAME))
            if layer == per_level and up != levels - 1:
                # The Upsample follows the ResBlock and, when present, the SpatialTransformer.
                modules.append((f"up_blocks.{up}.upsamplers.0.conv", f"output_blocks.{index}.{2 if attention else 1}.conv", SAME))
            index += 1
    modules += [("conv_norm_out", "out.0", SAME), ("conv_out", "out.2", SAME)]
    return modules


def vae_modules(config):
    """diffusionmodules.model.Encoder/Decoder: conv_in; encoder `down[i]` = (block: num_res_blocks
    ResnetBlocks, downsample.conv except on the last level); mid = block_1, attn_1, block_2; norm_out,
    conv_out. The decoder's `up` list is indexed by resolution level (up[0] is the full-resolution level,
    run last), while diffusers' up_blocks run in order: up_blocks[i] = up[levels - 1 - i]."""
    levels = len(config["block_out_channels"])
    modules = [("encoder.conv_in", "encoder.conv_in", SAME)]
    for level in range(levels):
        for layer in range(config["layers_per_block"]):
            modules.append((f"encoder.down_blocks.{level}.resnets.{layer}", f"encoder.down.{level}.block.{layer}", VAE_RESNET))
        if level != levels - 1:
            modules.append((f"encoder.down_blocks.{level}.downsamplers.0.conv", f"encoder.down.{level}.downsample.conv", SAME))
    for part in ("encoder", "decoder"):
        modules += [(f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", VAE_RESNET),
                    (f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", VAE_ATTENTION),
                    (f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", VAE_RESNET)]
    modules += [("encoder.conv_norm_out", "encoder.norm_out", SAME), ("encoder.conv_out", "encoder.conv_out", SAME),
                ("decoder.conv_in", "decoder.conv_in", SAME)]
    for index in range(levels):
        level = levels - 1 - index
        for layer in range(config["layers_per_block"] + 1):
            modules.append((f"decoder.up_blocks.{index}.resnets.{layer}", f"decoder.up.{level}.block.{layer}", VAE_RESNET))
        if level != 0:
            modules.append((f"decoder.up_blocks.{index}.upsamplers.0.conv", f"decoder.up.{level}.upsample.conv", SAME))
    modules += [("decoder.conv_norm_out", "decoder.norm_out", SAME), ("decoder.conv_out", "decoder.conv_out", SAME),
                ("quant_conv", "quant_conv", SAME), ("post_quant_conv", "post_quant_conv", SAME)]
    return modules


def open_clip_modules(config):
    """open_clip's text tower: token_embedding, positional_embedding (a bare Parameter), transformer.resblocks
    (ln_1, attn = nn.MultiheadAttention with fused in_proj, ln_2, mlp = c_fc, gelu, c_proj), ln_final."""
    modules = [("text_model.embeddings.token_embedding", "token_embedding", SAME),
               ("text_model.final_layer_norm", "ln_final", SAME)]
    renames = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
               "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for layer in range(config["num_hidden_layers"]):
        modules.append((f"text_model.encoder.layers.{layer}", f"transformer.resblocks.{layer}", renames))
    return modules


def rename(name, modules):
    """The LDM name of diffusers tensor `name`: its module's LDM path, with the rename of the first
    sub-module path that matches (the longest module prefix wins)."""
    best = None
    for diffusers_module, ldm_module, renames in modules:
        if name.startswith(diffusers_module + ".") and (best is None or len(diffusers_module) > len(best[0])):
            best = (diffusers_module, ldm_module, renames)
    assert best is not None, f"no LDM module for {name}"
    diffusers_module, ldm_module, renames = best
    rest = name[len(diffusers_module) + 1:]
    for old, new in renames.items():
        if rest.startswith(old + "."):
            rest = new + rest[len(old):]
            break
    return f"{ldm_module}.{rest}"


def unet_to_ldm(weights, config):
    modules = unet_modules(config)
    return {"model.diffusion_model." + rename(name, modules): tensor for name, tensor in weights.items()}


def vae_to_ldm(weights, config):
    modules = vae_modules(config)
    out = {}
    for name, tensor in weights.items():
        ldm = "first_stage_model." + rename(name, modules)
        # AttnBlock's q/k/v/proj_out are 1x1 convolutions: [C, C] -> [C, C, 1, 1], same bytes.
        if ".mid.attn_1." in ldm and ldm.endswith(".weight") and tensor.dim() == 2:
            tensor = tensor[:, :, None, None]
        out[ldm] = tensor
    return out


def clip_to_ldm(weights):
    """FrozenCLIPEmbedder stores transformers' CLIPTextModel under `transformer`, including the position_ids
    buffer that transformers of 2022 saved (int64 [1, 77]; transformers 4.46 no longer writes it)."""
    out = {"cond_stage_model.transformer." + name: tensor for name, tensor in weights.items()}
    positions = weights["text_model.embeddings.position_embedding.weight"].shape[0]
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(positions, dtype=torch.int64)[None]
    return out


def open_clip_to_ldm(weights, config, seed):
    """FrozenOpenCLIPEmbedder's `model`: q/k/v fused into in_proj (rows q, k, v, as nn.MultiheadAttention
    chunks them), plus the unused last resblock, text_projection and logit_scale."""
    modules = open_clip_modules(config)
    prefix = "cond_stage_model.model."
    out = {}
    for name, tensor in weights.items():
        if ".self_attn.q_proj." in name or ".self_attn.k_proj." in name or ".self_attn.v_proj." in name:
            continue
        if name == "text_model.embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = tensor
        else:
            out[prefix + rename(name, modules)] = tensor
    layers = config["num_hidden_layers"]
    for layer in range(layers):
        for kind in ("weight", "bias"):
            parts = [weights[f"text_model.encoder.layers.{layer}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
    # The last resblock (SD 2.x runs up to the penultimate): same shapes as the others, seeded values with
    # generate_sd_fixtures.py's scales (norm 1 + 0.1 z / 0.1 z, matrices z / sqrt(fan_in), biases 0.05 z).
    generator = torch.Generator().manual_seed(seed)
    template = f"{prefix}transformer.resblocks.0."
    for name in sorted(k for k in out if k.startswith(template)):
        tensor = out[name]
        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
        if ".ln_" in name:
            value = 1 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
        elif tensor.dim() == 2:
            value = noise / tensor.shape[1] ** 0.5
        else:
            value = 0.05 * noise
        out[name.replace(template, f"{prefix}transformer.resblocks.{layers}.")] = value.to(tensor.dtype)
    width = config["hidden_size"]
    projection = torch.randn(width, width, generator=generator, dtype=torch.float32) / width**0.5
    out[prefix + "text_projection"] = projection.to(weights["text_model.final_layer_norm.weight"].dtype)
    out[prefix + "logit_scale"] = torch.tensor(math.log(1 / 0.07), dtype=torch.float32)
    return out


def ddpm_buffers(dtype):
    """LatentDiffusion.register_schedule for SD's linear_start 0.00085, linear_end 0.012, 1000 steps
    (ldm's "linear" schedule: a linspace of square roots, squared), v_posterior 0; stored as torch.float32
    by ldm, then cast with the rest of the state dict."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    previous = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - previous) / (1.0 - alphas_cumprod)
    arrays = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": previous,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(previous) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - previous) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
    }
    out = {name: torch.tensor(value, dtype=torch.float32).to(dtype) for name, value in arrays.items()}
    # ldm's LitEma buffers, kept by the EMA-only ("pruned") releases.
    out["model_ema.decay"] = torch.tensor(0.9999, dtype=torch.float32)
    out["model_ema.num_updates"] = torch.tensor(0, dtype=torch.int32)
    return out


# ----------------------------------------------------------------------------------------------------
# Writing and checking
# ----------------------------------------------------------------------------------------------------

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
                      torch.int32: "I32"}


def write_safetensors(path, entries, metadata):
    """A safetensors file from (name, dtype, shape, load) entries, tensors in name order, metadata keys sorted,
    each tensor loaded and written in turn (so a full-size model never needs to be in memory at once).
    safetensors' own save_file orders `__metadata__` as a Rust HashMap does, which changes between runs."""
    entries = sorted(entries, key=lambda entry: entry[0])
    header, offset = {"__metadata__": dict(sorted(metadata.items()))}, 0
    for name, dtype, shape, _ in entries:
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, dtype, shape, load in entries:
            tensor = load()
            assert tensor.dtype == dtype and list(tensor.shape) == list(shape), f"{name}: {tensor.dtype}{list(tensor.shape)}"
            f.write(tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    os.replace(path + ".tmp", path)


def read_folder(folder, suffix):
    def component(name, file):
        with open(os.path.join(folder, name, "config.json")) as f:
            config = json.load(f)
        return load_file(os.path.join(folder, name, f"{file}{suffix}.safetensors")), config
    return {name: component(name, file) for name, file in
            (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model"))}


def to_ldm(parts, text_tower, seed, dtype):
    (unet, unet_config), (vae, vae_config), (text, text_config) = parts["unet"], parts["vae"], parts["text_encoder"]
    for weights in (unet, vae, text):  # the token embedding is F16 in every folder (generate_sd_fixtures.py)
        assert all(t.dtype == dtype or (name.endswith("token_embedding.weight") and t.dtype == torch.float16)
                   for name, t in weights.items()), "the folder's weights must have the file's dtype"
    checkpoint = unet_to_ldm(unet, unet_config)
    checkpoint.update(vae_to_ldm(vae, vae_config))
    checkpoint.update(clip_to_ldm(text) if text_tower == "clip" else open_clip_to_ldm(text, text_config, seed))
    checkpoint.update(ddpm_buffers(dtype))
    return checkpoint


def metadata_for(parts):
    metadata = {"format": "pt"}
    for component, keys in HIDDEN_CONFIG_KEYS.items():
        config = parts[component][1]
        metadata[f"tokenflow.{component}_config"] = json.dumps({key: config[key] for key in keys}, sort_keys=True)
    return metadata


def assert_same_tensors(label, actual, expected):
    assert set(actual) == set(expected), f"{label}: names differ: missing {sorted(set(expected) - set(actual))[:5]}, extra {sorted(set(actual) - set(expected))[:5]}"
    for name, tensor in expected.items():
        other = actual[name]
        assert other.dtype == tensor.dtype and other.shape == tensor.shape, f"{label}: {name} {other.dtype}{list(other.shape)} != {tensor.dtype}{list(tensor.shape)}"
        assert torch.equal(other, tensor), f"{label}: {name} differs"


def check_with_diffusers_converters(path, parts, text_tower):
    """Check 1: diffusers' LDM -> diffusers converters give back the folder's tensors."""
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextConfig, CLIPTextModel

    checkpoint = load_file(path)
    assert_same_tensors("unet", sfu.convert_ldm_unet_checkpoint(checkpoint, parts["unet"][1]), parts["unet"][0])
    assert_same_tensors("vae", sfu.convert_ldm_vae_checkpoint(checkpoint, parts["vae"][1]), parts["vae"][0])
    text, text_config = parts["text_encoder"]
    if text_tower == "clip":
        converted = sfu.convert_ldm_clip_checkpoint(checkpoint)
        converted.pop("text_model.embeddings.position_ids")  # a buffer transformers 4.46 recomputes
    else:
        model = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in text_config.items() if not k.startswith("_")}))
        converted = sfu.convert_open_clip_checkpoint(model, checkpoint)
        dropped = f"text_model.encoder.layers.{text_config['num_hidden_layers']}."
        extra = {name for name in converted if name.startswith(dropped)}
        assert len(extra) == 16, f"the unused last resblock should come back as 16 tensors under {dropped}, got {len(extra)}"
        for name in extra:
            converted.pop(name)
    assert_same_tensors("text_encoder", converted, text)
    return len(extra) if text_tower != "clip" else 0


def check_with_from_single_file(path, folder, dtype, variant):
    """Check 2: StableDiffusionPipeline.from_single_file with the folder's configs loads the same weights."""
    from diffusers import StableDiffusionPipeline

    single = StableDiffusionPipeline.from_single_file(path, config=folder, local_files_only=True, torch_dtype=dtype)
    reference = StableDiffusionPipeline.from_pretrained(folder, variant=variant, torch_dtype=dtype, local_files_only=True)
    for component in ("unet", "vae", "text_encoder"):
        assert_same_tensors(f"from_single_file {component}", getattr(single, component).state_dict(),
                            getattr(reference, component).state_dict())
    assert dict(single.scheduler.config) == dict(reference.scheduler.config), "scheduler configs differ"


def write_model(name, models_dir):
    text_tower, dtype, suffix, seed = MODELS[name]
    folder = os.path.join(models_dir, name)
    parts = read_folder(folder, suffix)
    checkpoint = to_ldm(parts, text_tower, seed, dtype)
    path = os.path.join(models_dir, f"{name}.safetensors")
    write_safetensors(path, [(name, t.dtype, t.shape, lambda t=t: t) for name, t in checkpoint.items()], metadata_for(parts))
    extra = check_with_diffusers_converters(path, parts, text_tower)
    check_with_from_single_file(path, folder, dtype, "fp16" if suffix else None)
    groups = {}
    for key in checkpoint:
        top = next((p for p in ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "model_ema.") if key.startswith(p)), "(schedule buffers)")
        groups[top] = groups.get(top, 0) + 1
    print(f"{path}: {os.path.getsize(path):,} bytes, {len(checkpoint)} tensors {groups}; "
          f"diffusers' converters and from_single_file give back every folder tensor"
          + (f" (plus the {extra} tensors of the unused last resblock, as diffusers maps index != 23)" if extra else ""))


def check_converted(directory, like, models_dir):
    """A folder written by `tokenflow convert`: diffusers loads it, and it equals the tiny folder."""
    from diffusers import StableDiffusionPipeline

    _, dtype, suffix, _ = MODELS[like]
    folder = os.path.join(models_dir, like)
    converted = StableDiffusionPipeline.from_pretrained(directory, torch_dtype=dtype, local_files_only=True)
    reference = StableDiffusionPipeline.from_pretrained(folder, variant="fp16" if suffix else None, torch_dtype=dtype,
                                                        local_files_only=True)
    for component in ("unet", "vae", "text_encoder"):
        assert_same_tensors(f"converted {component}", getattr(converted, component).state_dict(),
                            getattr(reference, component).state_dict())
        # diffusers' configs are FrozenDicts, transformers' are PretrainedConfig objects.
        mine, theirs = (c.to_dict() if hasattr(c, "to_dict") else dict(c)
                        for c in (getattr(p, component).config for p in (converted, reference)))
        ignored = {"_name_or_path", "_diffusers_version", "transformers_version", "torch_dtype", "_use_default_values",
                   "architectures", "_commit_hash", "_attn_implementation_autoset"}
        differing = sorted(k for k in set(mine) | set(theirs) if k not in ignored and mine.get(k) != theirs.get(k))
        assert not differing, f"{component} config differs in {[(k, mine.get(k), theirs.get(k)) for k in differing]}"
    schedulers = [{k: v for k, v in p.scheduler.config.items() if not k.startswith("_")} for p in (converted, reference)]
    assert schedulers[0] == schedulers[1], f"scheduler configs differ: {schedulers}"
    prompts = ["", "a photo of a cat!! it's 4k", "ÄÖÜ 東京 " * 20]
    for prompt in prompts:
        ids = [p.tokenizer(prompt, padding="max_length", truncation=True, max_length=77).input_ids for p in (converted, reference)]
        assert ids[0] == ids[1], f"tokenizer ids differ for {prompt!r}"
    print(f"{directory}: diffusers loads it; weights, configs, scheduler and tokenizer equal {folder}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="Tests/Fixtures/models", help="folder holding sd2-tiny/ and sd15-tiny/")
    parser.add_argument("--check-converted", metavar="DIR", help="check a folder written by `tokenflow convert`")
    parser.add_argument("--like", choices=sorted(MODELS), help="the tiny model DIR was converted from")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.check_converted:
        if not args.like:
            sys.exit("--check-converted needs --like MODEL")
        check_converted(args.check_converted, args.like, args.models)
        return
    for name in MODELS:
        write_model(name, args.models)


if __name__ == "__main__":
    main()
