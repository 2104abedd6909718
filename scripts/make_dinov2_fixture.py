"""Builds the tiny DINOv2 checkpoint and the transformers reference outputs
that worker/tests/dinov2_reference.rs compares against.

Run through scripts/make_dinov2_fixture.sh, which provides torch and
transformers (scripts/reference-requirements.txt). CI does not run this; it
reads the committed output in worker/tests/fixtures/dinov2-tiny.

    python scripts/make_dinov2_fixture.py OUT_DIR

The checkpoint is a `Dinov2Model` with the real tensor names, the real
geometry (14-pixel patches, a position grid trained at 518 = 37x37 patches,
so a 224 input resizes it bicubically as the released models do), tiny
widths and random weights scaled so that attention is far from uniform and
layer scale far from 1. Its preprocessor_config.json is facebook/dinov2's.
Inputs are 224x224 crops of PNG photos from Debian's opencv-doc, passed to
the processor with its resize and crop off, so Rust and transformers see
the same pixels.
"""

import json
import sys
from pathlib import Path

import torch
from PIL import Image
from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

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
PROCESSOR = {
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


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4,
                       image_size=518, patch_size=14, layerscale_value=1.0)
    torch.manual_seed(7)
    m = Dinov2Model(cfg).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
            elif "lambda1" in name:
                p.copy_(0.5 + torch.rand_like(p))
            elif "position_embeddings" in name or "cls_token" in name:
                p.normal_(0.0, 0.5)
            else:
                p.normal_(0.0, 0.2)
    m.save_pretrained(out, safe_serialization=True)
    (out / "preprocessor_config.json").write_text(json.dumps(PROCESSOR, indent=2) + "\n")

    imgs = [Image.open(DATA / f).convert("RGB").crop((l, t, l + SIDE, t + SIDE)) for f, l, t in CROPS]
    processor = BitImageProcessor(**{k: v for k, v in PROCESSOR.items() if k != "image_processor_type"})
    pixel_values = processor(imgs, do_resize=False, do_center_crop=False, return_tensors="pt").pixel_values
    assert pixel_values.shape == (len(CROPS), 3, SIDE, SIDE), pixel_values.shape
    with torch.no_grad():
        pooled = m(pixel_values=pixel_values).pooler_output
    expected = {
        "crops": [{"file": f, "left": l, "top": t} for f, l, t in CROPS],
        "side": SIDE,
        "embeddings": pooled.tolist(),
    }
    (out / "expected.json").write_text(json.dumps(expected) + "\n")
    print(f"wrote {out}: {len(CROPS)} embeddings of {pooled.shape[1]}")


if __name__ == "__main__":
    main()
