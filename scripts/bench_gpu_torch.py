"""PyTorch's side of scripts/bench_gpu.sh, on the same GPU as
worker/benches/gpu.rs and by the same rules: transformers' BLIP at the
shapes of blip-image-captioning-base and -large (random weights, exactly
GPU_STEPS generated tokens per image, greedy) and timm's
tf_efficientnet_lite0 (random weights: the compute is the model's),
images/s at the same batch sizes and dtypes; for BLIP also the image
encoder alone. As the worker does, each batch
starts as u8 pixels in host memory and ends with the results copied back
(token ids; embeddings and top-5 classes). Eager mode, as a user runs
`generate`. f32 is strict fp32 on both sides (no TF32: candle's default).
Prints one markdown row per configuration.
"""

import os
import sys
import time

import torch


def env_list(name, default):
    return [v for v in os.environ.get(name, default).split(",") if v]


DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def rate(batch, seconds, run):
    """Images/s of whole batches: one untimed, then until `seconds` passed (two at least)."""
    run()
    sync()
    started, done = time.perf_counter(), 0
    while done < 2 or time.perf_counter() - started < seconds:
        run()
        done += 1
    sync()
    return done * batch / (time.perf_counter() - started)


def images(count, size):
    """The Rust benchmark's deterministic images, [count, size, size, 3] u8."""
    i = torch.arange(count).view(-1, 1, 1)
    y = torch.arange(size).view(1, -1, 1)
    x = torch.arange(size).view(1, 1, -1)
    r = (x * (i + 1)) % 256
    g = (y * 3 + i * 40) % 256
    b = ((x // 8 + y // 8 + i) % 2) * 200
    return torch.stack(torch.broadcast_tensors(r, g, b), dim=-1).to(torch.uint8)


def row(model, dtype, batch, images_per_s, extra=""):
    print(f"| pytorch {torch.__version__} | {model} | {dtype} | {batch} | {images_per_s:.1f} | {extra} |",
          flush=True)


def blip(name, dtypes, batches, steps, seconds, device):
    from transformers import BlipConfig, BlipForConditionalGeneration

    vision = {} if name == "base" else {
        "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}
    cfg = BlipConfig(vision_config=vision, text_config={
        "num_attention_heads": 12, "encoder_hidden_size": vision.get("hidden_size", 768)})
    torch.manual_seed(0)
    with torch.device(device):
        model = BlipForConditionalGeneration(cfg).eval()
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711], device=device).view(1, 3, 1, 1)
    rgb = images(max(batches), 384)
    for dtype_name in dtypes:
        model = model.to(DTYPES[dtype_name])
        for batch in batches:
            def run():
                px = rgb[:batch].to(device).permute(0, 3, 1, 2).float().div(255)
                px = ((px - mean) / std).to(DTYPES[dtype_name])
                out = model.generate(pixel_values=px, do_sample=False, num_beams=1,
                                     min_new_tokens=steps, max_new_tokens=steps).cpu()
                assert out.shape[0] == batch and out.shape[1] >= steps, out.shape
            def vision():
                px = rgb[:batch].to(device).permute(0, 3, 1, 2).float().div(255)
                px = ((px - mean) / std).to(DTYPES[dtype_name])
                model.vision_model(pixel_values=px)[0].sum().item()
            with torch.inference_mode():
                r = rate(batch, seconds, run)
                v = rate(batch, seconds, vision)
            row(f"blip-{name}", dtype_name, batch, r,
                f"{r * steps:.0f} tokens/s; image encoder alone {v:.0f} images/s")
    del model
    torch.cuda.empty_cache()


def effnet(batches, seconds, device):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).to(device).eval()
    rgb = images(max(batches), 224)
    for batch in batches:
        def run():
            px = rgb[:batch].to(device).permute(0, 3, 1, 2).float().sub(127.5).div(127.5)
            embedding = model.forward_head(model.forward_features(px), pre_logits=True)
            top5 = model.get_classifier()(embedding).topk(5).indices
            embedding.cpu(), top5.cpu()
        with torch.inference_mode():
            r = rate(batch, seconds, run)
        row("efficientnet-lite0", "f32", batch, r)


def main():
    device = os.environ.get("GPU_DEVICE", "cuda:0")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    steps = int(os.environ.get("GPU_STEPS", "20"))
    seconds = float(os.environ.get("GPU_SECONDS", "2"))
    batches = [int(b) for b in env_list("GPU_BATCHES", "8,32,64")]
    dtypes = env_list("GPU_DTYPES", "f32,bf16")
    for name in env_list("GPU_BLIP", "base,large"):
        blip(name, dtypes, batches, steps, seconds, device)
        print(f"pytorch blip-{name}: done", file=sys.stderr)
    effnet_batches = [int(b) for b in env_list("GPU_EFFNET_BATCHES", "8,64,256")]
    if effnet_batches:
        effnet(effnet_batches, seconds, device)


if __name__ == "__main__":
    main()
