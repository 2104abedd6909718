#!/usr/bin/env bash
# The worker on a GPU against the same binary on the CPU, on the committed
# tiny fixtures (worker/tests/fixtures): BLIP captions in f32 (token ids
# must be identical) and bf16 (reported: a random tiny model's near-tied
# logits may flip either way), CLIP and DINOv2 embeddings (max |cpu - gpu|
# must stay under 1e-4). Run on the GPU machine with the binary that
# scripts/build-cuda.sh builds; the library path as scripts/bench_gpu.sh
# sets it.
# Usage: scripts/check_gpu.sh WORKER_BINARY IMAGE...   (Env: DEVICE (cuda:0), PYTHON (python3))
set -euo pipefail
worker="$1"
shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fixtures="$root/worker/tests/fixtures"
python="${PYTHON:-python3}"
libs="$("$python" -c '
import glob, os, nvidia
print(":".join(sorted({os.path.dirname(p) for base in nvidia.__path__
                       for p in glob.glob(os.path.join(base, "**", "lib*.so*"), recursive=True)})))' 2>/dev/null)" ||
  libs=""  # no PyTorch CUDA wheels here: the library path as it is
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for device in cpu "${DEVICE:-cuda:0}"; do
  tag="${device%%:*}"
  for dtype in f32 bf16; do
    "$worker" caption --device "$device" --dtype "$dtype" --batch 2 \
      --model-dir "$fixtures/blip-tiny" "$@" >"$out/blip-$dtype-$tag.jsonl"
  done
  "$worker" embed --device "$device" --batch 2 --task embed.clip-vit-b32 \
    --model-dir "$fixtures/clip-tiny" "$@" >"$out/clip-$tag.jsonl"
  "$worker" embed --device "$device" --batch 2 --task embed.dinov2-small \
    --model-dir "$fixtures/dinov2-tiny" "$@" >"$out/dinov2-$tag.jsonl"
done
"$python" - "$out" "${DEVICE:-cuda:0}" <<'PY'
import json, os, sys
out, gpu = sys.argv[1], sys.argv[2].split(":")[0]
def lines(name):
    with open(os.path.join(out, name)) as f:
        return [json.loads(l) for l in f if l.strip()]
ok = True
for dtype in ["f32", "bf16"]:
    cpu, dev = lines(f"blip-{dtype}-cpu.jsonl"), lines(f"blip-{dtype}-{gpu}.jsonl")
    same = sum(a["token_ids"] == b["token_ids"] for a, b in zip(cpu, dev))
    print(f"BLIP tiny {dtype}: {same} of {len(cpu)} captions with identical token ids")
    ok &= dtype != "f32" or (same == len(cpu) == len(dev) > 0)
for model in ["clip", "dinov2"]:
    cpu, dev = lines(f"{model}-cpu.jsonl"), lines(f"{model}-{gpu}.jsonl")
    diff = max(abs(p - q) for a, b in zip(cpu, dev) for p, q in zip(a["embedding"], b["embedding"]))
    print(f"{model} tiny: {len(dev)} embeddings, max |cpu - {gpu}| = {diff:.2e}")
    ok &= len(cpu) == len(dev) > 0 and diff < 1e-4
sys.exit(0 if ok else 1)
PY
