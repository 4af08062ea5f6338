#!/usr/bin/env python3
"""Checks that each host shows exactly the library's settings table: names (in order), help, defaults,
ranges and choices. The table is read from libtokenflow.so itself through ctypes (tf_option); each host's
help output is parsed from its own format.

Usage: option_parity.py LIBRARY HOST HELP_FILE   (HOST: ffmpeg | gstreamer | cli)
Prints PASS/FAIL lines (Tests/Host/support/check.sh's format) and exits non-zero on a failure.
"""
import ctypes
import math
import re
import sys

STRING, INT, FLOAT, CHOICE, SIZE = range(5)


class TFOption(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("help", ctypes.c_char_p), ("type", ctypes.c_int),
                ("default_value", ctypes.c_char_p), ("min", ctypes.c_double), ("max", ctypes.c_double),
                ("choices", ctypes.POINTER(ctypes.c_char_p)), ("choice_help", ctypes.POINTER(ctypes.c_char_p)),
                ("methods", ctypes.c_char_p)]


def library_table(path):
    library = ctypes.CDLL(path)
    library.tf_option.restype = ctypes.POINTER(TFOption)
    library.tf_option.argtypes = [ctypes.c_int]
    table = []
    index = 0
    while True:
        pointer = library.tf_option(index)
        if not pointer:
            return table
        o = pointer.contents
        choices = []
        if o.type == CHOICE:
            while o.choices[len(choices)]:
                choices.append((o.choices[len(choices)].decode(), o.choice_help[len(choices)].decode()))
        table.append({"name": o.name.decode(), "help": o.help.decode(), "type": o.type,
                      "default": o.default_value.decode(), "min": o.min, "max": o.max, "choices": choices})
        index += 1


def same_number(a, b):
    """Equal to the precision hosts print with (ffmpeg: %g, 6 significant digits)."""
    return math.isclose(float(a), float(b), rel_tol=1e-5, abs_tol=1e-9)


# FFmpeg prints well-known limits by name.
FFMPEG_LIMITS = {"INT_MAX": 2**31 - 1, "INT_MIN": -2**31, "UINT32_MAX": 2**32 - 1, "I64_MAX": 2**63 - 1,
                 "I64_MIN": -2**63, "FLT_MAX": 3.4028234663852886e38, "DBL_MAX": sys.float_info.max}


def ffmpeg_number(text):
    return FFMPEG_LIMITS.get(text, None) if text in FFMPEG_LIMITS else float(text)


def parse_ffmpeg(text):
    """`ffmpeg -h filter=tokenflow`: the rows after 'tokenflow AVOptions:'."""
    rows, current = [], None
    body = text.split("tokenflow AVOptions:", 1)[1]
    for line in body.splitlines():
        option = re.match(r"^   (\w+)\s+<(\w+)>\s+\S+ ?(.*)$", line)
        constant = re.match(r"^     (\w+)\s+(-?\d+)\s+\S+ ?(.*)$", line)
        if option:
            name, kind, rest = option.groups()
            default = None
            found = re.search(r' \(default (.*)\)$', rest)
            if found:
                default, rest = found.group(1), rest[:found.start()]
                if default.startswith('"') and default.endswith('"'):
                    default = default[1:-1]
            low = high = None
            found = re.search(r' \(from (\S+) to (\S+)\)$', rest)
            if found:
                low, high, rest = ffmpeg_number(found.group(1)), ffmpeg_number(found.group(2)), rest[:found.start()]
            current = {"name": name, "help": rest, "default": default or "", "min": low, "max": high, "choices": []}
            rows.append(current)
        elif constant and current is not None:
            current["choices"].append((constant.group(1), constant.group(3)))
    return rows


def compare(table, rows, check, ordered):
    """Each parsed row (name, help, default text, min, max, choices) against the library's table."""
    names = [r["name"] for r in rows]
    if ordered:
        check("names in the table's order", names == [o["name"] for o in table], f"{names}")
    else:
        check("the table's names", set(names) == {o["name"] for o in table}, f"{sorted(names)}")
    by_name = {r["name"]: r for r in rows}
    for o in table:
        r = by_name.get(o["name"])
        if r is None:
            continue
        problems = []
        if r["help"] != o["help"]:
            problems.append(f"help {r['help']!r}")
        if o["type"] in (INT, FLOAT):
            if r.get("min") is None or not same_number(r["min"], o["min"]) or not same_number(r["max"], o["max"]):
                problems.append(f"range {r.get('min')}..{r.get('max')}")
            if not same_number(r["default"] or "nan", o["default"]):
                problems.append(f"default {r['default']!r}")
        elif r["default"] != o["default"]:
            problems.append(f"default {r['default']!r}")
        if r["choices"] != o["choices"]:
            problems.append(f"choices {r['choices']}")
        check(f"option {o['name']}", not problems, "; ".join(problems) + f" (library: {o})")


def parse_gstreamer(text):
    """`gst-inspect-1.0 tokenflow`: the 'Element Properties' block (in name order), without GstObject's own
    name and parent."""
    rows, current = [], None
    body = text.split("Element Properties:", 1)[1]
    for line in body.splitlines():
        head = re.match(r"^  ([\w-]+)\s+: (.*)$", line)
        if head:
            current = {"name": head.group(1).replace("-", "_"), "help": head.group(2), "default": None, "choices": []}
            rows.append(current)
            continue
        if current is None:
            continue
        line = line.strip()
        value = re.match(r'^String\. Default: (null|"(.*)")$', line)
        number = re.match(r"^(Integer64|Integer|Unsigned Integer64|Unsigned Integer|Double|Float)\. "
                          r"Range:\s*(\S+) -\s*(\S+) Default:\s*(\S+)", line)
        enum = re.match(r'^Enum "[^"]+" Default: (-?\d+), "(.*)"$', line)
        choice = re.match(r"^\((-?\d+)\): (\S+)\s+- (.*)$", line)
        if value:
            current["default"] = value.group(2) or ""
        elif number:
            current.update(min=float(number.group(2)), max=float(number.group(3)), default=number.group(4))
        elif enum:
            current["default"] = enum.group(2)
        elif choice:
            current["choices"].append((choice.group(2), choice.group(3)))
    return [r for r in rows if r["name"] not in ("name", "parent")]


def parse_cli(text):
    """`tokenflow edit --help`: the SETTINGS section, '--name <value>' then its wrapped description."""
    rows, current = [], None
    body = text.split("SETTINGS", 1)[1]
    for line in body.splitlines():
        head = re.match(r"^  --(\w+) <value>$", line)
        if head:
            current = {"name": head.group(1), "text": "", "choices": []}
            rows.append(current)
        elif current is not None and line.startswith(" " * 12) and current["choices"]:
            current["choices"][-1] += " " + line.strip()  # a choice's wrapped line (hanging indent)
        elif current is not None and line.startswith(" " * 10):
            current["choices"].append(line.strip())
        elif current is not None and line.startswith(" " * 8):
            current["text"] += (" " if current["text"] else "") + line.strip()
        elif current is not None and line.strip() == "":
            current = None
    for row in rows:
        # "<help> (default: X[; an integer|a number from A to B][; one of ...][; methods: ...])"
        at = row["text"].rfind(" (default: ")
        row["help"], details = row["text"][:at], row["text"][at + 2:-1].split("; ")
        row["default"] = details[0][len("default: "):].replace('""', "")
        for detail in details[1:]:
            found = re.match(r"^an? (?:integer|number) from (\S+) to (\S+)$", detail)
            if found:
                row["min"], row["max"] = float(found.group(1)), float(found.group(2))
        row["choices"] = [tuple(c.split(": ", 1)) for c in row["choices"]]
    return rows


def main():
    library, host, help_file = sys.argv[1:4]
    table = library_table(library)
    text = open(help_file, encoding="utf-8").read()
    failures = []

    def check(name, ok, detail):
        if ok:
            print(f"PASS options {host}: {name}")
        else:
            print(f"FAIL options {host}: {name}: {detail}")
            failures.append(name)

    check("library table is not empty", len(table) > 0, "tf_option(0) is NULL")
    parse = {"ffmpeg": parse_ffmpeg, "gstreamer": parse_gstreamer, "cli": parse_cli}[host]
    compare(table, parse(text), check, ordered=host != "gstreamer")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
