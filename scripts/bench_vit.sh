#!/usr/bin/env bash
# ViT encoder benchmark (DINOv2 S/B, CLIP B/32): ours (one Rust run), then
# PyTorch transformers in its own process at the same configs, batch sizes
# and threads.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
source "$root/scripts/reference-env.sh"
cd "$root"
# As the worker sets it at start (worker/src/main.rs): candle otherwise
# reads /proc/cpuinfo on every matmul.
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-$(nproc)}"
cargo bench --workspace --bench vit
VIT_THREADS="$(nproc)" "$FF_REF_PYTHON" scripts/bench_vit_torch.py
