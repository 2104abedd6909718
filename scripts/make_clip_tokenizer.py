"""Builds CLIP's tokenizer.json from open_clip's BPE vocabulary.

The model hubs are unreachable here, but open_clip_torch on PyPI ships
OpenAI's vocabulary (`open_clip/bpe_simple_vocab_16e6.txt.gz`, the file
openai/CLIP itself loads). This lays it out as the Hugging Face tokenizer
files (vocab.json, merges.txt) in the order open_clip and openai/CLIP give
the ids, then has transformers convert them into the tokenizer.json that
`worker head zero-shot` reads (the same converter that made the hub's
openai/clip-vit-base-patch32 tokenizer.json).

    python scripts/make_clip_tokenizer.py OPEN_CLIP_WHEEL OUT_DIR

Run through scripts/make_clip_tokenizer.sh, which fetches the wheel and
provides transformers.
"""

import gzip
import json
import sys
import tempfile
import zipfile
from pathlib import Path

VOCAB_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# openai/CLIP keeps the first 49152 - 256 - 2 merges of the file.
MERGES = 49152 - 256 - 2


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table, as openai/CLIP."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def vocab_and_merges(wheel):
    """(token -> id, merges) exactly as open_clip's SimpleTokenizer builds
    them, with the special tokens spelled as transformers spells them."""
    with zipfile.ZipFile(wheel) as z:
        lines = gzip.decompress(z.read(VOCAB_MEMBER)).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:MERGES + 1]]
    assert len(merges) == MERGES and all(len(m) == 2 for m in merges), "unexpected vocabulary file"
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(vocab)) == len(vocab) == 49408
    return {t: i for i, t in enumerate(vocab)}, merges


def write_slow_files(wheel, out):
    """vocab.json and merges.txt: the files transformers' CLIPTokenizer reads."""
    vocab, merges = vocab_and_merges(wheel)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def build(wheel, out):
    from transformers import CLIPTokenizerFast

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        write_slow_files(wheel, scratch)
        fast = CLIPTokenizerFast(vocab_file=str(scratch / "vocab.json"), merges_file=str(scratch / "merges.txt"))
        fast.backend_tokenizer.save(str(Path(out) / "tokenizer.json"), pretty=False)


if __name__ == "__main__":
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    build(sys.argv[1], out)
    print(f"wrote {out / 'tokenizer.json'}")
