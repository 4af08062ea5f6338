"""Generate the CLIP tokenizer fixtures used by Tests/DiffusionTests/CLIPTokenizerTests.swift.

Usage (from the repository root, with the pinned tools of requirements.txt and WITHOUT ftfy):
    venv/bin/python Tests/Fixtures/generate_tokenizer_fixtures.py

Writes, under Tests/Fixtures/tokenizer/:
  sd2/, sd15/  diffusers-style `tokenizer/` folders: special_tokens_map.json and tokenizer_config.json exactly
               as transformers' `save_pretrained` writes them (pad token "!" as in SD 2.x, "<|endoftext|>" as
               in SD 1.5), plus relative symlinks to the committed ../../clip-tokenizer/ vocabulary files.
  cases.json   prompts with the ids transformers' slow CLIPTokenizer gives for each folder.

The reference is transformers' fallback text cleanup, used when ftfy is not installed:
BasicTokenizer(strip_accents=False, do_split_on_punc=False) plus lower-casing. The script refuses to run
with ftfy installed, because ftfy.fix_text would make the expected ids depend on ftfy's version.
"""
import importlib.util
import json
import os
import shutil
import tempfile

import transformers
from transformers import CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB_DIR = os.path.join(HERE, "clip-tokenizer")
OUT_DIR = os.path.join(HERE, "tokenizer")
MAX_LENGTH = 77
VARIANTS = {"sd2": "!", "sd15": "<|endoftext|>"}  # folder name -> pad token

LONG_PROMPT = (
    "a breathtaking panoramic matte painting of an ancient city floating above the clouds at golden hour, "
    "intricate gothic towers, glowing stained glass windows, flocks of birds, waterfalls pouring off the edges, "
    "dramatic volumetric lighting, ultra detailed, sharp focus, octane render, unreal engine 5, "
    "trending on artstation, by greg rutkowski and alphonse mucha and james gurney, 8k resolution, "
    "cinematic composition, highly detailed architecture, misty atmosphere, soft rim light"
)
# 75 one-token words fill the context exactly (bos + 75 + eos = 77); one more word is cut off.
EXACT_75 = " ".join(["cat", "dog"] * 37 + ["bird"])
EXACT_76 = EXACT_75 + " fish"

CASES = [
    ("plain", "a photo of an astronaut riding a horse on mars"),
    ("title case", "A Photo Of A Cat, Highly Detailed, 8K, Trending On ArtStation"),
    ("exclamations", "wow!!! so cool!"),
    ("lone exclamation", "!"),
    ("ellipsis", "wait... what?"),
    ("punctuation between letters", "a,b;c"),
    ("punctuation run with letters", "hello,world!how-are_you?(fine)"),
    ("contractions", "it's the cat's toy; they're here, we've won, i'm in, you'll see, he'd go"),
    ("bare suffixes", "'s 't 're 've 'm 'll 'd"),
    ("don't", "don't stop"),
    ("upper case contractions", "DON'T STOP, YOU'RE GREAT"),
    ("apostrophe runs", "''s 'x rock'n'roll"),
    ("long s after apostrophe", "'\u017f \u017ftartle"),
    ("resolution", "1920x1080"),
    ("4k", "4k uhd"),
    ("decimal", "pi is 3.14159"),
    ("other numbers", "x\u00b2\u00b3 \u00bd \u216b \u0663\u0664"),
    ("accents", "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e"),
    ("decomposed accents (NFC)", "cafe\u0301 cre\u0300me"),
    ("mark without precomposed form", "q\u0301 x\u0303"),
    ("german", "Stra\u00dfe GROSSE \u1e9e"),
    ("cjk", "\u6771\u4eac\u30bf\u30ef\u30fc"),
    ("cjk compatibility ideograph", "\uf900\u8c48"),
    ("hangul jamo (NFC)", "\u1100\u1161 \ud55c\uad6d\uc5b4"),
    ("emoji", "\U0001f431\U0001f6b2"),
    ("emoji zwj and skin tone", "\U0001f469\u200d\U0001f680 \U0001f44d\U0001f3fd \u2764\ufe0f"),
    ("cyrillic", "\u041c\u043e\u0441\u043a\u0432\u0430 \u0437\u0438\u043c\u043e\u0439"),
    ("arabic", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645"),
    ("greek final sigma", "\u039f\u0394\u039f\u03a3 \u03a3\u0391 \u039f\u0394\u039f\u03a3."),
    ("dotted capital i", "\u0130stanbul"),
    ("spaces tabs newlines", "a  photo\t\tof\n\na  cat\r\ndog"),
    ("unicode spaces", "no\u00a0break\u3000ideographic\u2028line\u2029para\u2003em"),
    ("control characters", "con\u0000trol\u0007chars\u001b[0m\u0085x\u000bvt"),
    ("format and replacement characters", "zero\u200bwidth soft\u00adhyphen bad\ufffdbyte \ufeffbom"),
    ("private use, unassigned and noncharacters", "a\ue000b c\U000e0001d e\u0378f g\uffffh"),
    # Python 3.11's unicodedata is Unicode 14.0: later characters count as unassigned and are removed.
    ("emoji newer than unicode 14", "\U0001fa77 \U0001fae8 heart"),
    # U+0345 matches no alternative of the case-insensitive pattern; after U+1F00, NFC composes it into a letter.
    ("ypogegrammeni", "a\u0345b .\u0345. \u1f00\u0345"),
    ("html", "fish &amp; chips <b>bold</b> &lt;3"),
    ("leading and trailing spaces", "   a cat   "),
    ("empty", ""),
    ("whitespace only", " \t\n "),
    ("long prompt (truncated)", LONG_PROMPT),
    ("exactly 75 tokens", EXACT_75),
    ("76 tokens (one cut)", EXACT_76),
    ("rare words", "supercalifragilisticexpialidocious antidisestablishmentarianism xqzvjkw"),
    ("endoftext literal", "<|endoftext|>"),
    ("special tokens inside text", "a cat<|endoftext|>a dog <|startoftext|> bird"),
    ("upper case special token", "<|ENDOFTEXT|> <|StartOfText|>"),
    ("special token split by removed char", "<|endof\u200btext|>"),
    ("special token with space", "<|endoftext |> <|endoftext|"),
    ("snake and kebab case", "snake_case kebab-case CamelCase"),
]


def main():
    assert transformers.__version__ == "4.46.3", transformers.__version__
    assert importlib.util.find_spec("ftfy") is None, "uninstall ftfy: the fixtures use transformers' fallback cleanup"

    vocab_file = os.path.join(VOCAB_DIR, "vocab.json")
    merges_file = os.path.join(VOCAB_DIR, "merges.txt")
    tokenizers = {}
    for name, pad in VARIANTS.items():
        folder = write_tokenizer_folder(name, pad, vocab_file, merges_file)
        # Load the folder back the way diffusers does, so the fixture checks the files as well as the code.
        tokenizer = CLIPTokenizer.from_pretrained(folder)
        assert tokenizer.fix_text is None and tokenizer.model_max_length == MAX_LENGTH
        tokenizers[name] = tokenizer

    cases = []
    for name, text in CASES:
        case = {"name": name, "text": text}
        for variant, tokenizer in tokenizers.items():
            ids = tokenizer(text, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
            tokens = tokenizer(text, add_special_tokens=False).input_ids
            case[variant] = {"input_ids": ids, "tokens": tokens}
        cases.append(case)

    by_name = {case["name"]: case for case in cases}
    assert len(by_name["exactly 75 tokens"]["sd15"]["tokens"]) == 75
    assert len(by_name["76 tokens (one cut)"]["sd15"]["tokens"]) == 76
    assert len(by_name["long prompt (truncated)"]["sd15"]["tokens"]) > MAX_LENGTH
    write_cases(os.path.join(OUT_DIR, "cases.json"), cases)
    print(f"wrote {len(cases)} cases to {os.path.relpath(OUT_DIR)}")


def write_tokenizer_folder(name, pad, vocab_file, merges_file):
    folder = os.path.join(OUT_DIR, name)
    os.makedirs(folder, exist_ok=True)
    tokenizer = CLIPTokenizer(vocab_file, merges_file, pad_token=pad, model_max_length=MAX_LENGTH)
    with tempfile.TemporaryDirectory() as saved:
        tokenizer.save_pretrained(saved)
        # save_pretrained re-serialises the vocabulary; make sure it is the committed one before linking to it.
        with open(os.path.join(saved, "vocab.json"), encoding="utf-8") as f, open(vocab_file, encoding="utf-8") as g:
            assert json.load(f) == json.load(g)
        with open(os.path.join(saved, "merges.txt"), encoding="utf-8") as f, open(merges_file, encoding="utf-8") as g:
            assert f.read() == g.read()
        for config in ("special_tokens_map.json", "tokenizer_config.json"):
            shutil.copyfile(os.path.join(saved, config), os.path.join(folder, config))
    for vocabulary_file in ("vocab.json", "merges.txt"):
        link = os.path.join(folder, vocabulary_file)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.join("..", "..", "clip-tokenizer", vocabulary_file), link)
    return folder


def write_cases(path, cases):
    """One line per id list keeps the file reviewable; texts are ASCII-escaped so that invisible differences
    (NFC versus NFD, zero-width and control characters) show in diffs."""
    entries = []
    for case in cases:
        fields = [f'"name": {json.dumps(case["name"])}', f'"text": {json.dumps(case["text"])}']
        for variant in VARIANTS:
            ids, tokens = case[variant]["input_ids"], case[variant]["tokens"]
            fields.append(
                f'"{variant}": {{\n        "input_ids": {json.dumps(ids)},\n        "tokens": {json.dumps(tokens)}\n      }}'
            )
        entries.append("    {\n      " + ",\n      ".join(fields) + "\n    }")
    header = f'{{\n  "transformers": "{transformers.__version__}",\n  "max_length": {MAX_LENGTH},\n  "cases": [\n'
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + ",\n".join(entries) + "\n  ]\n}\n")


if __name__ == "__main__":
    main()
