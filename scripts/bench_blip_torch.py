"""PyTorch transformers' BLIP captioning throughput, the third column of
scripts/bench_blip.sh: random weights of a real-size
blip-image-captioning-base, exactly STEPS generated tokens per image
(min_new_tokens = max_new_tokens), greedy, at the same batch sizes and
thread count as the Rust benchmark. Prints one markdown row per batch size
and dtype (BLIP_DTYPES, default f32; bf16 casts the whole model, as
`model.to(torch.bfloat16)` does).
"""

import os
import sys
import time

import torch
from transformers import BlipConfig, BlipForConditionalGeneration


def main():
    batches = [int(b) for b in os.environ.get("BLIP_BATCHES", "1,4,8,16").split(",")]
    dtypes = os.environ.get("BLIP_DTYPES", "f32").split(",")
    steps = int(os.environ.get("BLIP_STEPS", "20"))
    n_images = int(os.environ.get("BLIP_IMAGES", "16"))
    torch.set_num_threads(int(os.environ.get("BLIP_THREADS", str(os.cpu_count()))))
    torch.manual_seed(0)
    cfg = BlipConfig(text_config={"num_attention_heads": 12})
    model = BlipForConditionalGeneration(cfg).eval()
    pixels = torch.randn(max(n_images, max(batches)), 3, 384, 384)
    with torch.inference_mode():
        for name in dtypes:
            run(model, pixels, name, batches, steps, n_images)


def run(model, pixels, name, batches, steps, n_images):
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[name]
    model = model.to(dtype)
    pixels = pixels.to(dtype)
    model.generate(pixel_values=pixels[:1], min_new_tokens=2, max_new_tokens=2)  # warm-up
    for batch in batches:
        total = -(-max(n_images, batch) // batch) * batch
        started = time.perf_counter()
        for start in range(0, total, batch):
            idx = start % (pixels.shape[0] - batch + 1)
            out = model.generate(pixel_values=pixels[idx:idx + batch], do_sample=False,
                                 num_beams=1, min_new_tokens=steps, max_new_tokens=steps)
            assert out.shape == (batch, 1 + steps), out.shape
        seconds = time.perf_counter() - started
        rate = total / seconds
        print(f"| pytorch {torch.__version__} {name} | {batch} | {total} | {seconds:.1f} | {rate:.3f} "
              f"| {rate * steps:.1f} | threads {torch.get_num_threads()} |", flush=True)
        print(f"pytorch {name} batch {batch}: done", file=sys.stderr)


if __name__ == "__main__":
    main()
