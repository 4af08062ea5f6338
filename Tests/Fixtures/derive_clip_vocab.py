"""Derive CLIP's vocab.json and merges.txt from the BPE merge list shipped in open_clip_torch.

Usage: pip download --no-deps open_clip_torch==2.29.0; unzip the wheel's
open_clip/bpe_simple_vocab_16e6.txt.gz; python derive_clip_vocab.py BPE_GZ OUT_DIR

The vocabulary is built the way the original CLIP tokenizer builds it: the 256 byte symbols,
the same symbols with the end-of-word marker, one entry per merge (the first 48,894 merges of
the file), then <|startoftext|> and <|endoftext|>: 49,408 entries.
"""
import gzip
import json
import sys

MERGE_COUNT = 49152 - 256 - 2


def byte_symbols():
    """The 256 byte symbols in CLIP's order: printable bytes stand for themselves, in byte order;
    the other bytes follow, in byte order, as chr(256), chr(257), ..."""
    printable = [b for b in range(256) if ord("!") <= b <= ord("~") or ord("¡") <= b <= ord("¬") or ord("®") <= b <= ord("ÿ")]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def main(bpe_path, out_dir):
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : MERGE_COUNT + 1]]
    base = byte_symbols()
    vocab = base + [s + "</w>" for s in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    with open(f"{out_dir}/vocab.json", "w", encoding="utf-8") as f:
        json.dump({token: index for index, token in enumerate(vocab)}, f, ensure_ascii=False)
    with open(f"{out_dir}/merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
