#!/usr/bin/env bash
# The GPU benchmark, run on the GPU machine itself, which has PyTorch,
# transformers and timm but no Rust toolchain and no registry: ours
# (worker/benches/gpu.rs, built elsewhere by scripts/build-cuda.sh as
# bench-gpu-cuda.gz) and then PyTorch (scripts/bench_gpu_torch.py) on the
# same GPU, at the same batch sizes, dtypes and token count.
# Usage: scripts/bench_gpu.sh BENCH_BINARY EFFNET_MODEL_DIR
# Env: as worker/benches/gpu.rs reads it (GPU_BLIP, GPU_DTYPES,
# GPU_BATCHES, GPU_STEPS, GPU_EFFNET_BATCHES, GPU_SECONDS); PYTHON (python3).
set -euo pipefail
bench="$1"
export FF_MODEL_DIR="$2"
python="${PYTHON:-python3}"
# The cuda build loads CUDA 13's runtime, cuBLAS and cuRAND: PyTorch's
# CUDA wheels (the nvidia-* packages) hold them.
libs="$("$python" -c '
import glob, os, nvidia
print(":".join(sorted({os.path.dirname(p) for base in nvidia.__path__
                       for p in glob.glob(os.path.join(base, "**", "lib*.so*"), recursive=True)})))')"
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
echo "ours:"
status=0
"$bench" || status=$?
echo "pytorch:"
PYTHONUNBUFFERED=1 "$python" "$(dirname "${BASH_SOURCE[0]}")/bench_gpu_torch.py" || status=$?
exit "$status"
