#!/usr/bin/env python3
"""Breaks a copy of a user's file in place, the ways real files are broken (standard library only).

Usage: break_files.py ACTION PATH ARGS...
  json PATH KEY VALUE       set KEY of the JSON file to VALUE, a JSON text
  nan PATH TENSOR           write NaN into the first element of TENSOR of a safetensors file, as some real
                            checkpoints have
  metadata PATH KEY VALUE   set KEY of a safetensors file's __metadata__ to the string VALUE
  zeros PATH SHAPE          replace every tensor of a safetensors file by F32 zeros of SHAPE (e.g. 2,8,6,8)
  truncate PATH BYTES       cut the file to BYTES bytes
  fifo PATH                 replace the file with a named pipe (opening it for reading would wait forever)
A PATH that is a symbolic link (the fixtures share files) is first replaced by a private copy.
"""
import json
import os
import struct
import sys


def read_safetensors(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        return header, f.read()


def write_safetensors(path, header, data):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def write_nan(path, name):
    header, data = read_safetensors(path)
    entry = header[name]
    nan = {"F32": struct.pack("<I", 0x7FC00000), "F16": struct.pack("<H", 0x7E00), "BF16": struct.pack("<H", 0x7FC0)}
    start = entry["data_offsets"][0]
    value = nan[entry["dtype"]]
    write_safetensors(path, header, data[:start] + value + data[start + len(value):])


def set_metadata(path, key, value):
    header, data = read_safetensors(path)
    header.setdefault("__metadata__", {})[key] = value
    write_safetensors(path, header, data)


def zeros(path, shape_text):
    header, _ = read_safetensors(path)
    shape = [int(n) for n in shape_text.split(",")]
    size = 4
    for n in shape:
        size *= n
    names = [name for name in header if name != "__metadata__"]
    rebuilt = {"__metadata__": header["__metadata__"]} if "__metadata__" in header else {}
    for index, name in enumerate(names):
        rebuilt[name] = {"dtype": "F32", "shape": shape, "data_offsets": [index * size, (index + 1) * size]}
    write_safetensors(path, rebuilt, bytes(size * len(names)))


def set_json(path, key, value):
    with open(path) as f:
        document = json.load(f)
    document[key] = json.loads(value)
    with open(path, "w") as f:
        json.dump(document, f)


def private_copy(path):
    if os.path.islink(path):
        with open(os.path.realpath(path), "rb") as source:
            content = source.read()
        os.unlink(path)
        with open(path, "wb") as copy:
            copy.write(content)


def main():
    action, path, *args = sys.argv[1:]
    private_copy(path)
    if action == "json":
        set_json(path, *args)
    elif action == "nan":
        write_nan(path, *args)
    elif action == "metadata":
        set_metadata(path, *args)
    elif action == "zeros":
        zeros(path, *args)
    elif action == "truncate":
        os.truncate(path, int(args[0]))
    elif action == "fifo":
        os.unlink(path)
        os.mkfifo(path)
    else:
        sys.exit(f"break_files.py: unknown action {action}")


main()
