"""Builds the tiny ViT encoder checkpoints and the transformers reference
outputs that worker/tests/encoder_reference.rs compares against.

Run through scripts/make_vit_fixtures.sh, which provides torch and
transformers (scripts/reference-requirements.txt). CI does not run this; it
reads the committed output in worker/tests/fixtures/{dinov2,clip}-tiny.

    python scripts/make_vit_fixtures.py FIXTURES_DIR

- dinov2-tiny: a `Dinov2Model` with the real tensor names and geometry
  (14-pixel patches, a position grid trained at 518 = 37x37 patches, so a
  224 input resizes it bicubically as the released models do), random
  layer scale far from 1; facebook/dinov2's preprocessor_config.json.
  Expected: `pooler_output`, and it beside the mean of the patch tokens
  (`embed.dinov2-*-cls-mean`).
- clip-tiny: a `CLIPModel` shaped like openai/clip-vit-base-patch32 (32-pixel
  patches at 224, quick_gelu, an unbiased visual projection; a text tower
  with CLIP's 49408-token vocabulary and 77 positions), tiny widths;
  openai's preprocessor_config.json, numbers for sizes as that file has;
  tokenizer.json built from open_clip's vocabulary by make_clip_tokenizer.py.
  Expected: `get_image_features`; the token ids transformers' own (slow,
  Python) CLIPTokenizer gives for every text in TEXTS and for the lines of
  a real text file, after checking that open_clip's tokenizer agrees and
  that tokenizer.json does; `get_text_features` of zero-shot prompts and
  `logits_per_image.softmax(-1)` over them for each crop.

Weights are random, scaled so that attention is far from uniform. Inputs
are 224x224 crops of PNG photos from Debian's opencv-doc, passed to the
processor with its resize and crop off, so Rust and transformers see the
same pixels.
"""

import importlib.util
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from PIL import Image
from transformers import (BitImageProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel,
                          CLIPTokenizer, Dinov2Config, Dinov2Model, PreTrainedTokenizerFast)

import make_clip_tokenizer

DATA = Path("/usr/share/doc/opencv-doc/examples/data")
# (file, left, top): six different scenes.
CROPS = [
    ("graf1.png", 200, 120),
    ("chicky_512.png", 64, 64),
    ("rubberwhale1.png", 100, 0),
    ("sudoku.png", 80, 80),
    ("basketball1.png", 128, 48),
    ("cards.png", 128, 48),
]
SIDE = 224
# facebook/dinov2-small's preprocessor_config.json.
DINOV2_PROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}
# openai/clip-vit-base-patch32's preprocessor_config.json.
CLIP_PROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}

# Texts the tokenizer is checked on: labels and prompts as users write them,
# plus what trips tokenizers up (contractions, digits, punctuation runs,
# accents, other scripts, emoji, odd whitespace, a prompt longer than 77).
TEXTS = [
    "a photo of a dog.",
    "A person walking",
    "an empty street",
    "a red car, parked at night",
    "It's 3 o'clock; they're late & we'd've gone!!!",
    "1080p video at 29.97fps -- frame #42",
    "CAFÉ déjà vu naïve façade",
    "München Straße",
    "東京の夜景",
    "a cat 🐱 on a sofa",
    "tabs\tand\nnewlines   and  spaces",
    "e-mail: someone@example.com (see https://example.com/x?y=1)",
    "snake_case and CamelCase and kebab-case",
    "$12.50 + 7% = ?",
    " ".join(["a very long prompt"] * 30),
]
# A real file's lines: Debian's copy of the GPL.
TEXT_FILE = Path("/usr/share/common-licenses/GPL-3")
TEXT_FILE_LINES = 150
# Zero-shot head: its classes and template.
LABELS = ["a dog", "a city street at night", "a chessboard", "sunflowers", "a basketball game"]
TEMPLATE = "a photo of {}."


def randomise(m):
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name or "layrnorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
            elif "lambda1" in name:
                p.copy_(0.5 + torch.rand_like(p))
            elif "position" in name or "cls_token" in name or "class_embedding" in name:
                p.normal_(0.0, 0.5)
            else:
                p.normal_(0.0, 0.2)


def write(out, model, processor_config, features, extra=None):
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "preprocessor_config.json").write_text(json.dumps(processor_config, indent=2) + "\n")
    expected = {
        "crops": [{"file": f, "left": l, "top": t} for f, l, t in CROPS],
        "side": SIDE,
        "embeddings": features.tolist(),
        **(extra or {}),
    }
    (out / "expected.json").write_text(json.dumps(expected) + "\n")
    print(f"wrote {out}: {len(CROPS)} embeddings of {features.shape[1]}")


def main():
    root = Path(sys.argv[1])
    imgs = [Image.open(DATA / f).convert("RGB").crop((l, t, l + SIDE, t + SIDE)) for f, l, t in CROPS]

    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4,
                       image_size=518, patch_size=14, layerscale_value=1.0)
    torch.manual_seed(7)
    dinov2 = Dinov2Model(cfg).eval()
    randomise(dinov2)
    processor = BitImageProcessor(**{k: v for k, v in DINOV2_PROCESSOR.items() if k != "image_processor_type"})
    pixels = processor(imgs, do_resize=False, do_center_crop=False, return_tensors="pt").pixel_values
    assert pixels.shape == (len(CROPS), 3, SIDE, SIDE), pixels.shape
    with torch.no_grad():
        out = dinov2(pixel_values=pixels)
    # As Dinov2ForImageClassification's input: the class token beside the
    # mean of the patch tokens, both after the final layernorm.
    cls_mean = torch.cat([out.pooler_output, out.last_hidden_state[:, 1:].mean(1)], dim=1)
    write(root / "dinov2-tiny", dinov2, DINOV2_PROCESSOR, out.pooler_output, {"cls_mean": cls_mean.tolist()})

    cfg = CLIPConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=224, patch_size=32, hidden_act="quick_gelu"),
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, vocab_size=49408, max_position_embeddings=77),
        projection_dim=16,
    )
    torch.manual_seed(11)
    clip = CLIPModel(cfg).eval()
    randomise(clip)
    with torch.no_grad():
        # openai's initial temperature: probabilities neither flat nor one-hot.
        clip.logit_scale.fill_(2.6592)
    processor = CLIPImageProcessor(**{k: v for k, v in CLIP_PROCESSOR.items() if k != "feature_extractor_type"})
    pixels = processor(imgs, do_resize=False, do_center_crop=False, return_tensors="pt").pixel_values
    assert pixels.shape == (len(CROPS), 3, SIDE, SIDE), pixels.shape
    out = root / "clip-tiny"
    out.mkdir(parents=True, exist_ok=True)
    wheel = os.environ["FF_OPEN_CLIP_WHEEL"]
    make_clip_tokenizer.build(wheel, out)
    tokens = check_tokenizer(wheel, out / "tokenizer.json")
    slow = slow_tokenizer(wheel)
    prompts = [TEMPLATE.format(label) for label in LABELS]
    batch = slow(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        features = clip.get_image_features(pixel_values=pixels)
        text_features = clip.get_text_features(**batch)
        probabilities = clip(**batch, pixel_values=pixels).logits_per_image.softmax(-1)
    zero_shot = {
        "labels": LABELS,
        "template": TEMPLATE,
        "text_features": text_features.tolist(),
        "probabilities": probabilities.tolist(),
    }
    write(out, clip, CLIP_PROCESSOR, features, {"tokens": tokens, "zero_shot": zero_shot})


def slow_tokenizer(wheel):
    """transformers' Python CLIPTokenizer on open_clip's vocabulary."""
    scratch = Path(tempfile.mkdtemp())
    make_clip_tokenizer.write_slow_files(wheel, scratch)
    return CLIPTokenizer(vocab_file=str(scratch / "vocab.json"), merges_file=str(scratch / "merges.txt"))


def open_clip_tokenizer(wheel):
    """open_clip's own SimpleTokenizer, loaded from the wheel (its package
    __init__ would pull in timm)."""
    scratch = Path(tempfile.mkdtemp())
    with zipfile.ZipFile(wheel) as z:
        z.extract("open_clip/tokenizer.py", scratch)
        z.extract(make_clip_tokenizer.VOCAB_MEMBER, scratch)
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer", scratch / "open_clip/tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer(str(scratch / make_clip_tokenizer.VOCAB_MEMBER))


def check_tokenizer(wheel, tokenizer_json):
    """The ids of TEXTS and the text file's lines from transformers' slow
    tokenizer, once open_clip and tokenizer.json agree with it on each."""
    slow = slow_tokenizer(wheel)
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json))
    reference = open_clip_tokenizer(wheel)
    lines = [l for l in TEXT_FILE.read_text().splitlines() if l.strip()][:TEXT_FILE_LINES]
    out = []
    for text in TEXTS + lines:
        ids = slow(text).input_ids
        theirs = [reference.sot_token_id] + reference.encode(text) + [reference.eot_token_id]
        assert ids == theirs, f"transformers and open_clip disagree on {text!r}: {ids} {theirs}"
        ours = fast(text).input_ids
        assert ours == ids, f"tokenizer.json and transformers disagree on {text!r}: {ours} {ids}"
        out.append({"text": text, "ids": ids})
    print(f"tokenizer.json agrees with transformers and open_clip on {len(out)} texts")
    return out


if __name__ == "__main__":
    main()
