"""PyTorch transformers' ViT encoder throughput, the reference rows of
scripts/bench_vit.sh: the same real-size configs with random weights
(DINOv2 ViT-S/14 and ViT-B/14 `pooler_output`, CLIP ViT-B/32
`get_image_features`), 224x224 inputs, the same batch sizes and thread
count as the Rust benchmark. Prints one markdown row per model and batch.
"""

import os
import time

import torch
import transformers
from transformers import CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model


def model(name):
    if name.startswith("dinov2"):
        hidden, heads = {"dinov2-small": (384, 6), "dinov2-base": (768, 12)}[name]
        m = Dinov2Model(Dinov2Config(hidden_size=hidden, num_attention_heads=heads,
                                     image_size=518, patch_size=14)).eval()
        return lambda px: m(pixel_values=px).pooler_output, hidden
    assert name == "clip-b32", name
    m = CLIPModel(CLIPConfig()).eval()

    def features(px):
        # transformers 4.x returns the projected features; 5.x wraps them
        # in an output whose `pooler_output` they are.
        out = m.get_image_features(pixel_values=px)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    return features, 512


def main():
    names = os.environ.get("VIT_MODELS", "dinov2-small,dinov2-base,clip-b32").split(",")
    batches = [int(b) for b in os.environ.get("VIT_BATCHES", "1,8").split(",")]
    images = int(os.environ.get("VIT_IMAGES", "32"))
    torch.set_num_threads(int(os.environ.get("VIT_THREADS", str(os.cpu_count()))))
    torch.manual_seed(0)
    pixels = torch.randn(images, 3, 224, 224)
    for name in names:
        run, dim = model(name)
        with torch.inference_mode():
            run(pixels[:1])  # warm-up
            for batch in batches:
                total = images // batch * batch
                started = time.perf_counter()
                for start in range(0, total, batch):
                    out = run(pixels[start:start + batch])
                    assert out.shape == (batch, dim), out.shape
                seconds = time.perf_counter() - started
                print(f"| pytorch {torch.__version__} + transformers {transformers.__version__} "
                      f"| {name} | {batch} | {total} | {seconds:.2f} | {total / seconds:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
