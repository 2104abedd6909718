#!/usr/bin/env bash
# EfficientNet-Lite0 on CPU beside ONNX Runtime (its own process, same
# weights and threads). Figures go into BENCHMARKS.md with this command.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
source "$root/scripts/reference-env.sh"
cd "$root"
# As the worker sets it at start (worker/src/main.rs): candle otherwise
# reads /proc/cpuinfo on every matmul.
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-$(nproc)}"
cargo bench --workspace --bench encoder
