#!/usr/bin/env python3
"""Writes the synthetic fuzzing seeds (Python standard library only; run from the repository root):

- Tests/Fuzz/tokenizer/vocab.json, merges.txt: a small CLIP tokenizer cut from Tests/Fixtures/clip-tokenizer
  (the printable ASCII byte symbols with and without "</w>", the first 150 merges and their results, the two
  special tokens, all with their real ids). The fuzzer loads the tokenizer folder once per execution, and the
  full 1.5 MB vocabulary would make that 100x slower.
- Tests/Fuzz/seeds/safetensors/*.safetensors: small files covering every dtype, empty and scalar tensors,
  metadata, escaped names and an empty header, laid out as safetensors' own writer does (header padded with
  spaces to a multiple of 8).
- Tests/Fuzz/seeds/scheduler-config/*.json: the fixtures' scheduler config with the beta schedules, timestep
  spacings and prediction types it does not use.
- Tests/Fuzz/seeds/keyframes/*.json: keyframe schedules for the fuzzer's 10-frame clip (2 steps, batches of
  4, 4 and 2 frames), valid and not.
- Tests/Fuzz/seeds/single-file/*.safetensors: single-file checkpoints without their data (the fuzz target
  appends the data section as a hole): the headers of Tests/Fixtures/models/{sd2-tiny,sd15-tiny}.safetensors
  byte for byte, the same cut to the tensors the recognition reads (4x smaller, so 4x faster to run), and
  variants: metadata that decides the prediction type or none, EMA copies or none, SD 1.x's text encoder
  with SD 2.x's UNet and the reverse, and files the parser must refuse (a LoRA, SDXL, inpainting, partial,
  a standalone VAE, a ControlNet, a textual inversion, pickles).

The inversion seed is written by the engine itself; see Tests/Fuzz/README.md. Re-running this script
rewrites identical files.
"""
import json
import os
import re
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FUZZ = os.path.join(ROOT, "Tests", "Fuzz")


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def small_tokenizer():
    source = os.path.join(ROOT, "Tests", "Fixtures", "clip-tokenizer")
    with open(os.path.join(source, "vocab.json"), encoding="utf-8") as f:
        full = json.load(f)
    with open(os.path.join(source, "merges.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1:151]
    symbols = [chr(c) for c in range(0x21, 0x7F)]
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split(" ")) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: full[t] for t in tokens}
    vocab = dict(sorted(vocab.items(), key=lambda item: item[1]))
    write(os.path.join(FUZZ, "tokenizer", "vocab.json"), json.dumps(vocab, ensure_ascii=False).encode())
    write(os.path.join(FUZZ, "tokenizer", "merges.txt"), ("\n".join([lines[0]] + merges) + "\n").encode())


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    out = os.path.join(FUZZ, "seeds", "safetensors")
    f32 = struct.pack("<6f", 0.0, 1.0, -2.5, 3.0e38, 1.0e-40, float("nan"))
    write(os.path.join(out, "f32-with-metadata.safetensors"),
          safetensors([("weight", "F32", [2, 3], f32)], {"format": "pt", "note": "seed"}))
    write(os.path.join(out, "half-precisions.safetensors"), safetensors([
        ("f16", "F16", [4], struct.pack("<4H", 0x3C00, 0x7C00, 0xFC00, 0x7E00)),
        ("bf16", "BF16", [2, 2], struct.pack("<4H", 0x3F80, 0x7F80, 0x0001, 0x7FC1)),
    ]))
    write(os.path.join(out, "every-dtype.safetensors"), safetensors([
        ("f64", "F64", [1], struct.pack("<d", 1.0)),
        ("i64", "I64", [2], struct.pack("<2q", -1, 2**62)),
        ("i32", "I32", [1], struct.pack("<i", -7)),
        ("i16", "I16", [1], struct.pack("<h", -3)),
        ("i8", "I8", [2], b"\x80\x7f"),
        ("u64", "U64", [1], struct.pack("<Q", 2**64 - 1)),
        ("u32", "U32", [1], struct.pack("<I", 7)),
        ("u16", "U16", [1], struct.pack("<H", 9)),
        ("u8", "U8", [3], b"\x00\x01\xff"),
        ("bool", "BOOL", [2], b"\x00\x01"),
        ("e5m2", "F8_E5M2", [1], b"\x3c"),
        ("e4m3", "F8_E4M3", [1], b"\x38"),
    ]))
    write(os.path.join(out, "empty-and-scalar.safetensors"), safetensors([
        ("empty", "F32", [0, 4], b""),
        ("scalar", "F32", [], struct.pack("<f", 2.0)),
        ("zero-dims", "F16", [3, 0, 2], b""),
    ]))
    write(os.path.join(out, "escaped-names.safetensors"), safetensors([
        ("text_model.embeddings.token_embedding.weight", "F32", [1, 2], struct.pack("<2f", 1, 2)),
        ("caf\u00e9/\"quoted\"\\n", "F32", [1], struct.pack("<f", 3)),
        ("inverted/981", "F32", [1, 1, 1, 1], struct.pack("<f", 4)),
    ]))
    write(os.path.join(out, "empty-header.safetensors"), safetensors([]))


def scheduler_seeds():
    """The fixtures' scheduler uses one value of each choice; these use the others, so that every beta
    schedule, timestep spacing and prediction type is in the corpus (the mutator draws its strings from it)."""
    with open(os.path.join(ROOT, "Tests", "Fixtures", "models", "sd2-tiny", "scheduler", "scheduler_config.json")) as f:
        base = json.load(f)
    out = os.path.join(FUZZ, "seeds", "scheduler-config")
    variants = {
        "trailing-v-prediction-cosine.json": {"timestep_spacing": "trailing", "prediction_type": "v_prediction",
                                              "beta_schedule": "squaredcos_cap_v2", "steps_offset": 0},
        "linspace-sample-linear.json": {"timestep_spacing": "linspace", "prediction_type": "sample",
                                        "beta_schedule": "linear", "clip_sample": True, "set_alpha_to_one": True},
        "trained-betas.json": {"num_train_timesteps": 10, "steps_offset": 0,
                               "trained_betas": [0.0001 * (i + 1) for i in range(10)]},
    }
    for name, changes in variants.items():
        config = dict(base, **changes)
        write(os.path.join(out, name), (json.dumps(config, indent=2) + "\n").encode())


def keyframe_seeds():
    out = os.path.join(FUZZ, "seeds", "keyframes")
    seeds = {
        "valid.json": "[[0, 4, 8], [3, 7, 9]]",
        "valid-edges.json": "[[3, 7, 9], [0, 4, 8]]\n",
        "wrong-step-count.json": "[[0, 4, 8]]",
        "outside-batch.json": "[[0, 4, 10], [3, 7, 9]]",
        "empty.json": "[]",
    }
    for name, text in seeds.items():
        write(os.path.join(out, name), text.encode())


def fixture_header(name):
    """The raw header bytes of a fixture checkpoint and the header parsed (key order kept)."""
    with open(os.path.join(ROOT, "Tests", "Fixtures", "models", name + ".safetensors"), "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        raw = f.read(length)
    return raw, json.loads(raw)


def header_only(header):
    """A safetensors file of `header` (entries with their data_offsets as given) and no data section."""
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def data_end(header):
    return max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)


def with_tensors(header, tensors):
    """`header` plus tensors [(name, dtype, shape)] placed after its data."""
    header, end = dict(header), data_end(header)
    for name, dtype, shape in tensors:
        size = {"F32": 4, "F16": 2, "I64": 8, "I32": 4}[dtype]
        for dimension in shape:
            size *= dimension
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [end, end + size]}
        end += size
    return header


# The keys the recognition reads (SingleFileCheckpoint.recognise*), and the few the fuzz target takes.
RECOGNISED = re.compile(r"""(
    model\.diffusion_model\.(input_blocks\.0\.0\.weight | input_blocks\.\d+\.0\.(op|out_layers\.3)\.weight
      | input_blocks\.\d+\.1\.(proj_in\.weight | transformer_blocks\.\d+\.norm1\.weight | transformer_blocks\.0\.attn2\.to_k\.weight)
      | output_blocks\.\d+\.0\.out_layers\.3\.weight | output_blocks\.\d+\.1\.proj_in\.weight | out\.2\.(weight|bias))
  | first_stage_model\.(encoder\.conv_in\.weight | encoder\.down\.\d+\.block\.\d+\.conv[12]\.weight | decoder\.conv_(in|out)\.weight
      | (en|de)coder\.mid\.attn_1\.q\.weight | (post_)?quant_conv\.weight)
  | cond_stage_model\.transformer\.text_model\.(embeddings\.(token_embedding\.weight|position_embedding\.weight|position_ids)
      | encoder\.layers\.\d+\.mlp\.fc1\.weight | encoder\.layers\.0\.self_attn\.(k_proj\.weight|v_proj\.bias))
  | cond_stage_model\.model\.(token_embedding\.weight | positional_embedding | text_projection
      | transformer\.resblocks\.\d+\.(ln_1\.weight | mlp\.c_fc\.weight) | transformer\.resblocks\.0\.attn\.in_proj_(weight|bias))
  | model_ema\.decay | alphas_cumprod
)$""", re.X)


def minimal(header):
    return {k: v for k, v in header.items() if k == "__metadata__" or RECOGNISED.match(k)}


def renamed(header, rename):
    """`header` with each key renamed by `rename` (None drops it)."""
    out = {}
    for key, value in header.items():
        new = key if key == "__metadata__" else rename(key)
        if new is not None:
            out[new] = value
    return out


def single_file_seeds():
    out = os.path.join(FUZZ, "seeds", "single-file")
    sd2_raw, sd2 = fixture_header("sd2-tiny")
    sd15_raw, sd15 = fixture_header("sd15-tiny")
    # The fixtures' headers as written, data dropped (the length field is the header's own).
    write(os.path.join(out, "sd2-tiny.safetensors"), struct.pack("<Q", len(sd2_raw)) + sd2_raw)
    write(os.path.join(out, "sd15-tiny.safetensors"), struct.pack("<Q", len(sd15_raw)) + sd15_raw)
    sd2_min, sd15_min = minimal(sd2), minimal(sd15)
    write(os.path.join(out, "sd2-tiny-recognised-keys.safetensors"), header_only(sd2_min))
    write(os.path.join(out, "sd15-tiny-recognised-keys.safetensors"), header_only(sd15_min))

    def metadata(header, **changes):
        meta = {k: v for k, v in dict(header["__metadata__"], **changes).items() if v is not None}
        return dict(header, __metadata__=meta)

    # What the model predicts: from modelspec metadata, or unknown (SD 2.x without it).
    write(os.path.join(out, "sd2-modelspec-768-v.safetensors"), header_only(metadata(
        sd2_min, **{"modelspec.architecture": "stable-diffusion-v2-768-v", "modelspec.title": "seed"})))
    write(os.path.join(out, "sd2-prediction-epsilon.safetensors"), header_only(metadata(
        sd2_min, **{"modelspec.prediction_type": "epsilon", "modelspec.architecture": "stable-diffusion-v2-512"})))
    write(os.path.join(out, "sd15-modelspec-v1.safetensors"), header_only(metadata(
        sd15_min, **{"modelspec.architecture": "stable-diffusion-v1", "modelspec.prediction_type": "v"})))
    # Without tokenflow's metadata the tiny widths (not multiples of 64) leave the heads unknown: refused.
    write(os.path.join(out, "sd2-no-metadata.safetensors"),
          header_only({k: v for k, v in sd2_min.items() if k != "__metadata__"}))
    # Metadata a part may not take, and one that is not JSON.
    write(os.path.join(out, "sd15-metadata-wrong-keys.safetensors"), header_only(metadata(
        sd15_min, **{"tokenflow.vae_config": '{"latent_channels": 8}', "tokenflow.text_encoder_config": "[4"})))

    # EMA-only (as v1-5-pruned-emaonly: no model_ema.* at all, no schedule buffers), and with the EMA copy of
    # every UNet weight as the unpruned releases hold it (model_ema.<key without model. and dots>).
    write(os.path.join(out, "sd15-ema-only.safetensors"), header_only(renamed(
        sd15_min, lambda k: None if k.startswith("model_ema.") or k == "alphas_cumprod" else k)))
    ema = [("model_ema." + k[len("model."):].replace(".", ""), v["dtype"], v["shape"])
           for k, v in sd15_min.items() if k.startswith("model.diffusion_model.")]
    write(os.path.join(out, "sd15-with-ema-weights.safetensors"),
          header_only(with_tensors(sd15_min, ema + [("model_ema.num_updates", "I64", [])])))

    # The text encoder of the other family: SD 1.x's CLIP beside SD 2.x's UNet and VAE, and the reverse.
    def parts(header, prefixes):
        return {k: v for k, v in header.items() if k == "__metadata__" or k.startswith(prefixes)}
    unet_vae = ("model.diffusion_model.", "first_stage_model.")
    sd1_text = parts(sd15_min, ("cond_stage_model.",))
    sd2_text = parts(sd2_min, ("cond_stage_model.",))
    write(os.path.join(out, "sd2-unet-sd1-text-encoder.safetensors"), header_only(with_tensors(
        parts(sd2_min, unet_vae), [(k, v["dtype"], v["shape"]) for k, v in sd1_text.items() if k != "__metadata__"])))
    write(os.path.join(out, "sd15-unet-sd2-text-encoder.safetensors"), header_only(with_tensors(
        parts(sd15_min, unet_vae), [(k, v["dtype"], v["shape"]) for k, v in sd2_text.items() if k != "__metadata__"])))

    # Refused: a kohya LoRA of the UNet and text encoder, and a PEFT one.
    lora = []
    for block in ["lora_unet_down_blocks_0_attentions_0_proj_in", "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k",
                  "lora_te_text_model_encoder_layers_0_self_attn_q_proj"]:
        lora += [(block + ".lora_down.weight", "F16", [4, 32]), (block + ".lora_up.weight", "F16", [32, 4]), (block + ".alpha", "F16", [])]
    write(os.path.join(out, "lora-kohya.safetensors"), header_only(with_tensors(
        {"__metadata__": {"ss_network_dim": "4", "ss_network_alpha": "1.0"}}, lora)))
    write(os.path.join(out, "lora-peft.safetensors"), header_only(with_tensors({}, [
        ("unet.down_blocks.0.attentions.0.proj_in.lora_A.weight", "F32", [4, 32]),
        ("unet.down_blocks.0.attentions.0.proj_in.lora_B.weight", "F32", [32, 4])])))
    # Refused: SDXL (both text encoders under conditioner.embedders.*, with an SD-like UNet and VAE).
    sdxl = renamed(sd15_min, lambda k: k.replace("cond_stage_model.", "conditioner.embedders.0."))
    write(os.path.join(out, "sdxl-like.safetensors"), header_only(with_tensors(sdxl, [
        ("conditioner.embedders.1.model.token_embedding.weight", "F16", [16, 32]),
        ("conditioner.embedders.1.model.positional_embedding", "F16", [8, 32]),
        ("model.diffusion_model.label_emb.0.0.weight", "F16", [32, 16])])))
    # Refused: inpainting (conv_in takes 9 channels), a ControlNet, an upscaler's class embedding, a
    # textual inversion, a partial checkpoint, a standalone VAE and a diffusers part.
    conv_in = "model.diffusion_model.input_blocks.0.0.weight"
    shape = sd15_min[conv_in]["shape"]
    inpainting = {k: v for k, v in sd15_min.items() if k != conv_in}
    write(os.path.join(out, "sd15-inpainting.safetensors"), header_only(with_tensors(
        inpainting, [(conv_in, sd15_min[conv_in]["dtype"], [shape[0], 9] + shape[2:])])))
    write(os.path.join(out, "controlnet.safetensors"), header_only(with_tensors({}, [
        ("control_model.input_hint_block.0.weight", "F16", [16, 3, 3, 3]), ("control_model.zero_convs.0.0.bias", "F16", [32])])))
    write(os.path.join(out, "upscaler-label-emb.safetensors"), header_only(with_tensors(
        sd2_min, [("model.diffusion_model.label_emb.0.0.weight", "F32", [32, 32])])))
    write(os.path.join(out, "textual-inversion.safetensors"), header_only(with_tensors({}, [("emb_params", "F32", [2, 32])])))
    write(os.path.join(out, "partial-no-vae.safetensors"), header_only(
        {k: v for k, v in sd15_min.items() if not k.startswith("first_stage_model.")}))
    write(os.path.join(out, "standalone-vae.safetensors"), header_only(renamed(
        sd15_min, lambda k: k[len("first_stage_model."):] if k.startswith("first_stage_model.") else None)))
    write(os.path.join(out, "diffusers-unet.safetensors"), header_only(with_tensors({}, [
        ("conv_in.weight", "F32", [32, 4, 3, 3]), ("down_blocks.0.resnets.0.conv1.weight", "F32", [32, 32, 3, 3])])))
    # Refused before parsing: a torch.save ZIP archive and a bare protocol-2 pickle.
    write(os.path.join(out, "pickle-zip.safetensors"), b"PK\x03\x04\x14\x00\x00\x00\x00\x00archive/data.pkl")
    write(os.path.join(out, "pickle-protocol-2.safetensors"), b"\x80\x02}q\x00(X\x0a\x00\x00\x00state_dictq\x01.")


if __name__ == "__main__":
    small_tokenizer()
    safetensors_seeds()
    scheduler_seeds()
    keyframe_seeds()
    single_file_seeds()
