#!/usr/bin/env python3
"""Writes NaN into the first element of a tensor of a safetensors file, in place (standard library only):
a model whose weights are broken the way some real checkpoints are.

Usage: poison_weights.py FILE TENSOR
"""
import json
import struct
import sys

path, name = sys.argv[1], sys.argv[2]
with open(path, "r+b") as f:
    (length,) = struct.unpack("<Q", f.read(8))
    entry = json.loads(f.read(length))[name]
    nan = {"F32": struct.pack("<I", 0x7FC00000), "F16": struct.pack("<H", 0x7E00), "BF16": struct.pack("<H", 0x7FC0)}
    f.seek(8 + length + entry["data_offsets"][0])
    f.write(nan[entry["dtype"]])
