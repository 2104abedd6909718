#!/usr/bin/env bash
# DINOv2 encoder benchmark: ours (one Rust run), then PyTorch transformers in
# its own process at the same configs, batch sizes and threads.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
source "$root/scripts/reference-env.sh"
cd "$root"
cargo bench --profile dev --workspace --bench dinov2
DINOV2_THREADS="$(nproc)" "$FF_REF_PYTHON" scripts/bench_dinov2_torch.py
