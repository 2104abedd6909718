#!/usr/bin/env bash
# BLIP captioning benchmark: ours vs candle-transformers (one Rust run), then
# PyTorch transformers at the same batch sizes and threads. Same config
# (blip-base, random weights), same number of generated tokens.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
source "$root/scripts/reference-env.sh"
cd "$root"
threads="$(nproc)"
# As the worker sets it at start (worker/src/main.rs): candle otherwise
# reads /proc/cpuinfo on every matmul.
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-$(nproc)}"
cargo bench -p worker --features bench-reference --bench blip
BLIP_THREADS="$threads" "$FF_REF_PYTHON" scripts/bench_blip_torch.py
