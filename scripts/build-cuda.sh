#!/usr/bin/env bash
# Builds the worker with `--features cuda` on a machine with neither a GPU
# nor a CUDA install: NVIDIA's CUDA 13.0 compiler, headers and libraries
# come from their PyPI wheels, and the driver library (which ships only
# with the GPU driver) is linked against a stub. Output:
# $FF_CACHE/target-cuda/release/worker, and worker-cuda.gz and
# bench-gpu-cuda.gz (the GPU benchmark, scripts/bench_gpu.sh), stripped,
# to carry. Where they run they need the GPU driver's libcuda.so.1 and
# CUDA 13's libcudart, libcublas (with libcublasLt), libcurand and libnvrtc
# on the library path. Not run in CI; checked by running it (BENCHMARKS.md, GPU).
# Usage: scripts/build-cuda.sh [--check]   (CUDA_COMPUTE_CAP, default 90: H100/H200)
# --check type-checks the `cuda` feature's code instead (kernels/cuda.rs,
# the GPU benchmark): scripts/test.sh runs it, so CI, which has no GPU,
# keeps that code compiling.
set -euo pipefail
check=false
[ "${1:-}" = "--check" ] && check=true
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
cd "$root"

cuda="$FF_CACHE/cuda-13.0"
toolkit="$cuda/nvidia/cu13"
# CUDA 13.0, the version of the GPU machines' driver (580): the driver
# compiles candle's PTX kernels when they load, and refuses PTX from a
# newer toolkit than its own. The cu12 nvcc wheels carry ptxas but no nvcc;
# the CUDA 13 ones carry both. NVVM holds cicc, nvcc's front end; CCCL
# provides <nv/target>, which cuda_fp16.h includes.
wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96
  nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35)
if [ "$(cat "$cuda/installed" 2>/dev/null)" != "${wheels[*]}" ]; then
  log "installing CUDA 13.0 build tools from PyPI into $cuda (once)"
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
if $check; then
  cargo check --locked --workspace --lib --bins --benches --features worker/cuda
  exit 0
fi
cargo build --release --locked --bin worker --features worker/cuda
# The GPU benchmark (worker/benches/gpu.rs, run by scripts/bench_gpu.sh).
cargo bench --locked --no-run --bench gpu --features worker/cuda \
  --message-format=json-render-diagnostics >"$CARGO_TARGET_DIR/bench-gpu.json"
bench="$("$FF_PYTHON" -c '
import json, sys
print([m["executable"] for m in map(json.loads, open(sys.argv[1]))
       if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu"
       and m.get("executable")][-1])' "$CARGO_TARGET_DIR/bench-gpu.json")"
# Stripped and compressed for carrying to a GPU machine: the binary with
# its debug info is 290 MB, this about 23 MB.
for pair in "worker:$CARGO_TARGET_DIR/release/worker" "bench-gpu:$bench"; do
  strip -o "$CARGO_TARGET_DIR/release/${pair%%:*}-cuda" "${pair#*:}"
  gzip -f "$CARGO_TARGET_DIR/release/${pair%%:*}-cuda"
done
log "built $CARGO_TARGET_DIR/release/worker and the gpu benchmark (CUDA, compute capability $CUDA_COMPUTE_CAP): worker-cuda.gz, bench-gpu-cuda.gz (stripped)"
