#!/usr/bin/env bash
# ViT encoder benchmark (DINOv2 S/B, CLIP B/32): ours (one Rust run), then
# PyTorch transformers in its own process at the same configs, batch sizes
# and threads.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
source "$root/scripts/reference-env.sh"
cd "$root"
cargo bench --profile dev --workspace --bench vit
VIT_THREADS="$(nproc)" "$FF_REF_PYTHON" scripts/bench_vit_torch.py
