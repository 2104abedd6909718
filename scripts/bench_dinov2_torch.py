"""PyTorch transformers' DINOv2 throughput, the reference rows of
scripts/bench_dinov2.sh: the same real-size configs with random weights,
224x224 inputs, the same batch sizes and thread count as the Rust benchmark.
Prints one markdown row per model and batch size.
"""

import os
import time

import torch
import transformers
from transformers import Dinov2Config, Dinov2Model

SIZES = {"small": (384, 6), "base": (768, 12)}


def main():
    models = os.environ.get("DINOV2_MODELS", "small,base").split(",")
    batches = [int(b) for b in os.environ.get("DINOV2_BATCHES", "1,8").split(",")]
    images = int(os.environ.get("DINOV2_IMAGES", "32"))
    torch.set_num_threads(int(os.environ.get("DINOV2_THREADS", str(os.cpu_count()))))
    torch.manual_seed(0)
    pixels = torch.randn(images, 3, 224, 224)
    for name in models:
        hidden, heads = SIZES[name]
        cfg = Dinov2Config(hidden_size=hidden, num_attention_heads=heads, image_size=518, patch_size=14)
        model = Dinov2Model(cfg).eval()
        with torch.inference_mode():
            model(pixel_values=pixels[:1])  # warm-up
            for batch in batches:
                total = images // batch * batch
                started = time.perf_counter()
                for start in range(0, total, batch):
                    out = model(pixel_values=pixels[start:start + batch]).pooler_output
                    assert out.shape == (batch, hidden), out.shape
                seconds = time.perf_counter() - started
                print(f"| pytorch {torch.__version__} + transformers {transformers.__version__} "
                      f"| dinov2-{name} | {batch} | {total} | {seconds:.2f} | {total / seconds:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
