"""Build a whole full-size SD2.1-base-shaped model with random weights, as a diffusers folder and as a
single-file checkpoint in the original layout, for load benchmarks (never for correctness; never commit).

Usage (pinned venv of Tests/Fixtures/requirements.txt):

    venv/bin/python scripts/make_full_size_model.py DIR [--seed S]

Writes DIR/folder/ (model_index.json, unet/ vae/ text_encoder/ F32 safetensors with the architectures of
stabilityai/stable-diffusion-2-1-base, tokenizer/, scheduler/; 5.2 GB) and DIR/sd21-base.safetensors (the
same tensors under the original LDM names, OpenCLIP q/k/v fused, plus a random 24th resblock as the real
checkpoints have; 5.2 GB), with the mapping and the writer of Tests/Fixtures/generate_single_file_fixtures.py.
Components are built and saved one at a time, and the single file is written tensor by tensor, so the peak
memory is that of building and saving the UNet (~7.3 GB, as scripts/make_full_size_unet.py).

    tokenflow-bench load DIR/folder
    tokenflow-bench load DIR/sd21-base.safetensors
"""
import argparse
import gc
import json
import math
import os
import shutil
import sys

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(root, "scripts"))
sys.path.insert(0, os.path.join(root, "Tests", "Fixtures"))
from make_full_size_unet import SD21_BASE_UNET_CONFIG  # noqa: E402
import generate_single_file_fixtures as ldm  # noqa: E402

# stabilityai/stable-diffusion-2-1-base vae/config.json and text_encoder/config.json (architecture keys).
VAE_CONFIG = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                  up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                  layers_per_block=2, act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=768,
                  scaling_factor=0.18215)
TEXT_CONFIG = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                   num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
                   projection_dim=512, bos_token_id=0, eos_token_id=2, pad_token_id=1)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
                        timestep_spacing="leading")


def save_folder(folder, seed):
    """Each component built with seeded default init, saved, and freed before the next."""
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(seed)
    for name, build in (("unet", lambda: UNet2DConditionModel(**SD21_BASE_UNET_CONFIG)),
                        ("vae", lambda: AutoencoderKL(**VAE_CONFIG)),
                        ("text_encoder", lambda: CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG)))):
        model = build()
        model.save_pretrained(os.path.join(folder, name), safe_serialization=True)
        del model
        gc.collect()
    vocab = os.path.join(root, "Tests", "Fixtures", "clip-tokenizer")
    CLIPTokenizer(os.path.join(vocab, "vocab.json"), os.path.join(vocab, "merges.txt"), pad_token="!",
                  model_max_length=77).save_pretrained(os.path.join(folder, "tokenizer"))
    DDIMScheduler(**SCHEDULER_CONFIG).save_pretrained(os.path.join(folder, "scheduler"))
    index = {"_class_name": "StableDiffusionPipeline", "feature_extractor": [None, None], "image_encoder": [None, None],
             "requires_safety_checker": False, "safety_checker": [None, None],
             "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)


def single_file_entries(folder, seed):
    """(LDM name, dtype, shape, function returning the tensor) for every tensor of the single file."""
    def config(part):
        with open(os.path.join(folder, part, "config.json")) as f:
            return json.load(f)

    def reader(part, file):
        return safe_open(os.path.join(folder, part, file), "pt")

    def stored(f, name):
        return (torch.float32, f.get_slice(name).get_shape(), lambda: f.get_tensor(name))

    entries = []
    unet = reader("unet", "diffusion_pytorch_model.safetensors")
    modules = ldm.unet_modules(config("unet"))
    for name in unet.keys():
        entries.append(("model.diffusion_model." + ldm.rename(name, modules), *stored(unet, name)))
    vae = reader("vae", "diffusion_pytorch_model.safetensors")
    modules = ldm.vae_modules(config("vae"))
    for name in vae.keys():
        key = "first_stage_model." + ldm.rename(name, modules)
        dtype, shape, load = stored(vae, name)
        if ".mid.attn_1." in key and key.endswith(".weight") and len(shape) == 2:  # 1x1 convolutions in ldm
            shape, load = shape + [1, 1], (lambda load=load: load()[:, :, None, None])
        entries.append((key, dtype, shape, load))
    text = reader("text_encoder", "model.safetensors")
    text_config = config("text_encoder")
    modules = ldm.open_clip_modules(text_config)
    prefix = "cond_stage_model.model."
    for name in text.keys():
        if any(f".self_attn.{p}_proj." in name for p in "qkv"):
            continue
        key = prefix + ("positional_embedding" if name == "text_model.embeddings.position_embedding.weight"
                        else ldm.rename(name, modules))
        entries.append((key, *stored(text, name)))
    layers, width = text_config["num_hidden_layers"], text_config["hidden_size"]
    for layer in range(layers):
        for kind, shape in (("weight", [3 * width, width]), ("bias", [3 * width])):
            names = [f"text_model.encoder.layers.{layer}.self_attn.{p}_proj.{kind}" for p in "qkv"]
            entries.append((f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}", torch.float32, shape,
                            lambda names=names: torch.cat([text.get_tensor(n) for n in names])))
    # The 24th resblock (unused by SD 2.x, present in the real files), text_projection and logit_scale.
    generator = torch.Generator().manual_seed(seed + 1)
    shapes = {"ln_1.weight": [width], "ln_1.bias": [width], "attn.in_proj_weight": [3 * width, width],
              "attn.in_proj_bias": [3 * width], "attn.out_proj.weight": [width, width], "attn.out_proj.bias": [width],
              "ln_2.weight": [width], "ln_2.bias": [width], "mlp.c_fc.weight": [4 * width, width],
              "mlp.c_fc.bias": [4 * width], "mlp.c_proj.weight": [width, 4 * width], "mlp.c_proj.bias": [width]}
    for name, shape in shapes.items():
        entries.append((f"{prefix}transformer.resblocks.{layers}.{name}", torch.float32, shape,
                        lambda shape=shape: torch.randn(shape, generator=generator) / math.sqrt(shape[-1])))
    entries.append((prefix + "text_projection", torch.float32, [width, width],
                    lambda: torch.randn(width, width, generator=generator) / math.sqrt(width)))
    entries.append((prefix + "logit_scale", torch.float32, [], lambda: torch.tensor(math.log(1 / 0.07))))
    for name, tensor in ldm.ddpm_buffers(torch.float32).items():
        entries.append((name, tensor.dtype, list(tensor.shape), lambda tensor=tensor: tensor))
    return entries


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = os.path.join(args.dir, "folder")
    if os.path.exists(folder):
        shutil.rmtree(folder)
    save_folder(folder, args.seed)
    path = os.path.join(args.dir, "sd21-base.safetensors")
    ldm.write_safetensors(path, single_file_entries(folder, args.seed), {"format": "pt"})
    print(f"wrote {folder} and {path} ({os.path.getsize(path) / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
