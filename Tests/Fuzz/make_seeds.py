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

The inversion seed is written by the engine itself; see Tests/Fuzz/README.md. Re-running this script
rewrites identical files.
"""
import json
import os
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


if __name__ == "__main__":
    small_tokenizer()
    safetensors_seeds()
    scheduler_seeds()
    keyframe_seeds()
