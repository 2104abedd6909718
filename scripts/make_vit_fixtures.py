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
  Expected: `pooler_output`.
- clip-tiny: a `CLIPModel` shaped like openai/clip-vit-base-patch32 (32-pixel
  patches at 224, quick_gelu, an unbiased visual projection), tiny widths;
  openai's preprocessor_config.json, numbers for sizes as that file has.
  Expected: `get_image_features`.

Weights are random, scaled so that attention is far from uniform. Inputs
are 224x224 crops of PNG photos from Debian's opencv-doc, passed to the
processor with its resize and crop off, so Rust and transformers see the
same pixels.
"""

import json
import sys
from pathlib import Path

import torch
from PIL import Image
from transformers import (BitImageProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel,
                          Dinov2Config, Dinov2Model)

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


def write(out, model, processor_config, features):
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "preprocessor_config.json").write_text(json.dumps(processor_config, indent=2) + "\n")
    expected = {
        "crops": [{"file": f, "left": l, "top": t} for f, l, t in CROPS],
        "side": SIDE,
        "embeddings": features.tolist(),
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
        pooled = dinov2(pixel_values=pixels).pooler_output
    write(root / "dinov2-tiny", dinov2, DINOV2_PROCESSOR, pooled)

    cfg = CLIPConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=224, patch_size=32, hidden_act="quick_gelu"),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, vocab_size=64, max_position_embeddings=16),
        projection_dim=16,
    )
    torch.manual_seed(11)
    clip = CLIPModel(cfg).eval()
    randomise(clip)
    processor = CLIPImageProcessor(**{k: v for k, v in CLIP_PROCESSOR.items() if k != "feature_extractor_type"})
    pixels = processor(imgs, do_resize=False, do_center_crop=False, return_tensors="pt").pixel_values
    assert pixels.shape == (len(CROPS), 3, SIDE, SIDE), pixels.shape
    with torch.no_grad():
        features = clip.get_image_features(pixel_values=pixels)
    write(root / "clip-tiny", clip, CLIP_PROCESSOR, features)


if __name__ == "__main__":
    main()
