#!/usr/bin/env bash
# Builds the worker with `--features cuda` on a machine with neither a GPU
# nor a CUDA install: NVIDIA's CUDA 13.4 compiler, headers and libraries
# come from their PyPI wheels, and the driver library (which ships only
# with the GPU driver) is linked against a stub. Output:
# $FF_CACHE/target-cuda/release/worker, and worker-cuda.gz (stripped) to
# carry. Where it runs it needs the GPU driver's libcuda.so.1 and CUDA 13's
# libcudart, libcublas (with libcublasLt) and libcurand on the library
# path. Not run in CI; checked by running it (BENCHMARKS.md, GPU).
# Usage: scripts/build-cuda.sh   (CUDA_COMPUTE_CAP, default 90: H100/H200)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
cd "$root"

cuda="$FF_CACHE/cuda-13.4"
toolkit="$cuda/nvidia/cu13"
# cudarc 0.19 (candle 0.11's CUDA bindings) knows CUDA up to 13.4. The
# cu12 nvcc wheels carry ptxas but no nvcc; the CUDA 13 ones carry both.
# NVVM holds cicc, nvcc's front end; CCCL provides <nv/target>, which
# cuda_fp16.h includes.
wheels=(nvidia-cuda-nvcc==13.4.92 nvidia-cuda-crt==13.4.92 nvidia-cuda-runtime==13.4.92
  nvidia-nvvm==13.4.92 nvidia-cuda-cccl==13.3.5.0.6 nvidia-cuda-nvrtc==13.4.92 nvidia-cublas==13.4.3.11
  nvidia-curand==10.4.4.72)
if [ "$(cat "$cuda/installed" 2>/dev/null)" != "${wheels[*]}" ]; then
  log "installing CUDA 13.4 build tools from PyPI into $cuda (once)"
  rm -rf "$cuda"
  "$FF_CACHE/venv/bin/pip" install -q --no-deps --target "$cuda" "${wheels[@]}"
  echo "${wheels[*]}" >"$cuda/installed"
fi

# cudarc links with -lcuda -lcublas …, looking under $CUDA_ROOT/lib and
# lib/stubs: the wheels hold only the versioned names.
for lib in "$toolkit"/lib/lib*.so.*; do
  name="$(basename "$lib")"
  ln -sf "$name" "$toolkit/lib/${name%%.so.*}.so"
done
# The driver stub: every driver function cudarc declares, doing nothing,
# under the driver's SONAME so that the real one is loaded at run time.
# (An empty stub would be dropped by the linker's --as-needed.)
stub="$toolkit/lib/stubs/libcuda.so"
if [ ! -f "$stub" ]; then
  mkdir -p "$(dirname "$stub")"
  cargo fetch --locked -q
  cudarc="$(cargo metadata --format-version 1 --locked --features worker/cuda |
    "$FF_PYTHON" -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')"
  grep -ohE '^\s+fn cu[A-Za-z0-9_]+\(' "$(dirname "$cudarc")/src/driver/sys/mod.rs" |
    sed -E 's/^\s+fn ([A-Za-z0-9_]+)\(/int \1(void) { return 999; }/' | sort -u >"$cuda/libcuda-stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$cuda/libcuda-stub.c"
fi

export PATH="$toolkit/bin:$PATH" CUDA_ROOT="$toolkit"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="$FF_CACHE/target-cuda"
cargo build --release --locked --bin worker --features worker/cuda
# Stripped and compressed for carrying to a GPU machine: the binary with
# its debug info is 290 MB, this about 23 MB.
strip -o "$CARGO_TARGET_DIR/release/worker-cuda" "$CARGO_TARGET_DIR/release/worker"
gzip -f "$CARGO_TARGET_DIR/release/worker-cuda"
log "built $CARGO_TARGET_DIR/release/worker (CUDA, compute capability $CUDA_COMPUTE_CAP) and worker-cuda.gz (stripped)"
