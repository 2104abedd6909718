//! Kernels of ours on CUDA devices, where candle has no fitting op or its
//! op is slow: compiled from the CUDA C below by NVRTC at first use (the
//! NVRTC of the machine it runs on, so the build needs no GPU toolkit
//! beyond candle's own). f32 and bf16 (as raw 16 bits, arithmetic in f32).
//!
//! candle's elementwise kernels index a non-contiguous operand with 64-bit
//! divisions per dimension per element: a bias added by broadcasting, or
//! the heads split out of a projection by permuting, cost more than the
//! GEMM beside them (BLIP-large's image encoder on an H200 in bf16 ran at
//! a third of PyTorch's speed). Here rows and columns are loop indices.

use std::sync::OnceLock;

use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor,
    backend::BackendStorage,
    bail,
    cuda_backend::{
        CudaDType, CudaStorageSlice, WrapErr,
        cudarc::{
            driver::{CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg},
            nvrtc,
        },
    },
};

use super::{depthwise::Geometry, linear::Activation};

const MODULE: &str = "framefleet";

const SOURCE: &str = r#"
__device__ __forceinline__ float load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load(const unsigned short* p, long long i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
}
__device__ __forceinline__ void store(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store(unsigned short* p, long long i, float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays NaN
        p[i] = (unsigned short)((u >> 16) | 0x40u);
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    p[i] = (unsigned short)(u >> 16);
}

// The activations of kernels/linear.rs: 0 none, 1 GELU (erf), 2 QuickGELU, 3 ReLU6.
__device__ __forceinline__ float activate(float v, int act) {
    switch (act) {
    case 1: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case 2: return v / (1.0f + expf(-1.702f * v));
    case 3: return fminf(fmaxf(v, 0.0f), 6.0f);
    default: return v;
    }
}

// y = act(x + bias) over [rows, cols]: blocks down the rows, threads along them.
template <typename T>
__device__ void bias_act(const T* x, const T* bias, T* y, int rows, int cols, int act) {
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x) {
            long long i = (long long)r * cols + c;
            store(y, i, activate(load(x, i) + load(bias, c), act));
        }
    }
}

// [B, N, P*H*D] -> [P, B, H, N, D], part 0 times `scale`: a block per input row.
template <typename T>
__device__ void split_heads(const T* x, T* y, int rows, int n, int parts, int heads, int d,
                            float scale) {
    int hd = heads * d, width = parts * hd;
    long long part = (long long)rows * hd;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        int b = r / n, t = r - b * n;
        for (int c = threadIdx.x; c < width; c += blockDim.x) {
            int p = c / hd, rest = c - p * hd, h = rest / d, e = rest - h * d;
            float v = load(x, (long long)r * width + c);
            store(y, p * part + (((long long)b * heads + h) * n + t) * d + e, p == 0 ? v * scale : v);
        }
    }
}

// [B, H, N, D] -> [B, N, H*D]: a block per output row.
template <typename T>
__device__ void merge_heads(const T* x, T* y, int rows, int n, int heads, int d) {
    int hd = heads * d;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        int b = r / n, t = r - b * n;
        for (int c = threadIdx.x; c < hd; c += blockDim.x) {
            int h = c / d, e = c - h * d;
            store(y, (long long)r * hd + c, load(x, (((long long)b * heads + h) * n + t) * d + e));
        }
    }
}

#define BOTH(NAME, ARGS, CALL) \
    extern "C" __global__ void NAME##_f32 ARGS { typedef float T; CALL; } \
    extern "C" __global__ void NAME##_bf16 ARGS { typedef unsigned short T; CALL; }

BOTH(bias_act, (const void* x, const void* b, void* y, int rows, int cols, int act),
     bias_act((const T*)x, (const T*)b, (T*)y, rows, cols, act))
BOTH(split_heads, (const void* x, void* y, int rows, int n, int parts, int heads, int d, float scale),
     split_heads((const T*)x, (T*)y, rows, n, parts, heads, d, scale))
BOTH(merge_heads, (const void* x, void* y, int rows, int n, int heads, int d),
     merge_heads((const T*)x, (T*)y, rows, n, heads, d))

// kernels/depthwise.rs on NHWC f32: a block per output row, a thread per
// (pixel, channel) of it (coalesced loads), taps in the CPU kernel's order
// (bias, then row by row), so results agree to float rounding.
extern "C" __global__ void depthwise_nhwc_f32(
    const float* x, const float* w, const float* bias, float* y, int rows, int h, int wd,
    int c, int k, int stride, int top, int left, int oh, int ow, int relu6)
{
    int width = ow * c;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        int n = r / oh, oy = r - n * oh, y0 = oy * stride - top;
        const float* image = x + (long long)n * h * wd * c;
        for (int j = threadIdx.x; j < width; j += blockDim.x) {
            int ox = j / c, ch = j - ox * c, x0 = ox * stride - left;
            float acc = bias[ch];
            for (int ky = 0; ky < k; ++ky) {
                int iy = y0 + ky;
                if (iy < 0 || iy >= h) continue;
                const float* row = image + (long long)iy * wd * c + ch;
                const float* taps = w + ky * k * c + ch;
                for (int kx = 0; kx < k; ++kx) {
                    int ix = x0 + kx;
                    if (ix < 0 || ix >= wd) continue;
                    acc = fmaf(row[(long long)ix * c], taps[kx * c], acc);
                }
            }
            if (relu6) acc = fminf(fmaxf(acc, 0.0f), 6.0f);
            y[(long long)r * width + j] = acc;
        }
    }
}
"#;

/// The PTX of `SOURCE`, compiled once per process.
fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        nvrtc::compile_ptx(SOURCE)
            .map(|ptx| ptx.to_src())
            .map_err(|e| e.to_string())
    })
    .as_deref()
    .map_err(|e| candle_core::Error::Msg(format!("cannot compile the CUDA kernels: {e}")))
}

/// `kernels::depthwise` on a CUDA device: `[x, w, bias]` f32 storages and
/// their layouts; returns `[batch, oh, ow, c]`.
pub(super) fn depthwise_nhwc(
    [(xs, xl), (ws, wl), (bs, bl)]: [(&CudaStorage, &Layout); 3],
    batch: usize,
    g: &Geometry,
) -> Result<CudaStorage> {
    let (CudaStorageSlice::F32(x), CudaStorageSlice::F32(w), CudaStorageSlice::F32(b)) =
        (&xs.slice, &ws.slice, &bs.slice)
    else {
        bail!("depthwise-nhwc supports f32 only");
    };
    let (oh, ow) = (g.h.div_ceil(g.stride), g.w.div_ceil(g.stride));
    let sizes = [
        batch * oh,
        g.h,
        g.w,
        g.c,
        g.k,
        g.stride,
        g.top,
        g.left,
        oh,
        ow,
        usize::from(g.relu6),
    ]
    .map(int)
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    let inputs = [view(x, xl)?, view(w, wl)?, view(b, bl)?];
    let len = batch * oh * ow * g.c;
    launch(
        xs,
        "depthwise_nhwc",
        &inputs,
        len,
        &sizes,
        None,
        (blocks(batch * oh), 1),
    )
}

/// Whether these kernels serve `t`: on a CUDA device, in f32 or bf16.
pub fn serves(t: &Tensor) -> bool {
    t.device().is_cuda() && matches!(t.dtype(), DType::F32 | DType::BF16)
}

/// `i32` for a kernel's size argument.
fn int(v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| candle_core::Error::Msg(format!("{v} does not fit a CUDA kernel's sizes")))
}

/// Runs kernel `name` (suffixed by the dtype) with `inputs`, a fresh output
/// of `len` values and then `sizes`, on `grid` blocks of 256 threads.
#[allow(unsafe_code)]
fn launch<T: CudaDType + DeviceRepr>(
    storage: &CudaStorage,
    name: &str,
    inputs: &[CudaView<'_, T>],
    len: usize,
    sizes: &[i32],
    scale: Option<f32>,
    grid: (u32, u32),
) -> Result<CudaStorage> {
    let dev = storage.device();
    let suffix = match storage.dtype() {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        other => bail!("{name}: no CUDA kernel for {other:?}"),
    };
    let func = dev.get_or_load_custom_func(&format!("{name}_{suffix}"), MODULE, ptx()?)?;
    // SAFETY: every element is written by the kernel.
    let mut y = unsafe { dev.alloc::<T>(len)? };
    let mut args = func.builder();
    for input in inputs {
        args.arg(input);
    }
    args.arg(&mut y);
    for size in sizes {
        args.arg(size);
    }
    if let Some(scale) = &scale {
        args.arg(scale);
    }
    // SAFETY: the arguments match the kernel's signature in `SOURCE`, and
    // the sizes are the operands' own, checked by the caller.
    unsafe {
        args.launch(LaunchConfig {
            grid_dim: (grid.0.max(1), grid.1.max(1), 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        })
    }
    .w()?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// `launch` on one operand, f32 or bf16.
fn launch_one(
    (xs, xl): (&CudaStorage, &Layout),
    name: &str,
    len: usize,
    sizes: &[i32],
    scale: Option<f32>,
    grid: (u32, u32),
) -> Result<CudaStorage> {
    match &xs.slice {
        CudaStorageSlice::F32(x) => launch(xs, name, &[view(x, xl)?], len, sizes, scale, grid),
        CudaStorageSlice::BF16(x) => launch(xs, name, &[view(x, xl)?], len, sizes, scale, grid),
        _ => bail!("{name}: no kernel for {:?}", xs.dtype()),
    }
}

/// A contiguous operand's values.
fn view<'a, T>(s: &'a CudaSlice<T>, l: &Layout) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(s.slice(start..end)),
        None => bail!("a CUDA kernel of ours needs contiguous operands"),
    }
}

/// Blocks for `n` rows, at most 65535 (the grid's y limit; kernels stride).
fn blocks(n: usize) -> u32 {
    n.clamp(1, 65_535) as u32
}

/// `act(x + bias)` for `x` `[rows, cols]` and `bias` `[cols]`, in one pass.
pub fn bias_act(x: &Tensor, bias: &Tensor, act: Activation) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&bias.contiguous()?, &BiasAct(act))
}

struct BiasAct(Activation);

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bail!("bias-act runs on CUDA devices only")
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (rows, cols) = xl.shape().dims2()?;
        if bl.dims() != [cols] {
            bail!("bias-act: bias {:?} for rows of {cols}", bl.dims());
        }
        let act = match self.0 {
            Activation::Identity => 0,
            Activation::Gelu => 1,
            Activation::QuickGelu => 2,
            Activation::Relu6 => 3,
        };
        let sizes = [int(rows)?, int(cols)?, act];
        let grid = (cols.div_ceil(256) as u32, blocks(rows));
        let y = match (&xs.slice, &bs.slice) {
            (CudaStorageSlice::F32(x), CudaStorageSlice::F32(b)) => launch(
                xs,
                "bias_act",
                &[view(x, xl)?, view(b, bl)?],
                rows * cols,
                &sizes,
                None,
                grid,
            )?,
            (CudaStorageSlice::BF16(x), CudaStorageSlice::BF16(b)) => launch(
                xs,
                "bias_act",
                &[view(x, xl)?, view(b, bl)?],
                rows * cols,
                &sizes,
                None,
                grid,
            )?,
            _ => bail!(
                "bias-act: {:?} values with a {:?} bias",
                xs.dtype(),
                bs.dtype()
            ),
        };
        Ok((y, xl.shape().clone()))
    }
}

/// `[B, N, P·H·D]` → `[P, B, H, N, D]`, part 0 times `scale`.
pub fn split_heads(x: &Tensor, parts: usize, heads: usize, scale: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&SplitHeads {
        parts,
        heads,
        scale: scale as f32,
    })
}

struct SplitHeads {
    parts: usize,
    heads: usize,
    scale: f32,
}

impl CustomOp1 for SplitHeads {
    fn name(&self) -> &'static str {
        "split-heads"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("split-heads runs on CUDA devices only")
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let (b, n, width) = xl.shape().dims3()?;
        let (p, h) = (self.parts, self.heads);
        if p * h == 0 || width % (p * h) != 0 {
            bail!("split-heads: {width} values per token are not {p} × {h} heads");
        }
        let d = width / (p * h);
        let sizes = [int(b * n)?, int(n)?, int(p)?, int(h)?, int(d)?];
        let grid = (blocks(b * n), 1);
        let len = b * n * width;
        let y = launch_one((xs, xl), "split_heads", len, &sizes, Some(self.scale), grid)?;
        Ok((y, Shape::from((p, b, h, n, d))))
    }
}

/// `[B, H, N, D]` → `[B, N, H·D]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&MergeHeads)
}

struct MergeHeads;

impl CustomOp1 for MergeHeads {
    fn name(&self) -> &'static str {
        "merge-heads"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("merge-heads runs on CUDA devices only")
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let (b, h, n, d) = xl.shape().dims4()?;
        let sizes = [int(b * n)?, int(n)?, int(h)?, int(d)?];
        let grid = (blocks(b * n), 1);
        let len = b * h * n * d;
        let y = launch_one((xs, xl), "merge_heads", len, &sizes, None, grid)?;
        Ok((y, Shape::from((b, n, h * d))))
    }
}
