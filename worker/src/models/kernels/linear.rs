//! A dense layer: one GEMM over all tokens (or pixels) with the bias and
//! activation applied as each tile of the output is stored. Transformer
//! blocks use it, and EfficientNet's 1×1 convolutions on NHWC activations.
//!
//! candle-nn's `Linear` runs a batched matmul per leading dimension and a
//! single-threaded `broadcast_add`, and its `gelu_erf` is another
//! single-threaded pass; on a 2-core CPU those passes cost a quarter of a
//! BLIP layer. On the CPU, f32 weights are packed once at load
//! (`kernels/gemm/`), for f32 or bf16 products; the activations are compiled for AVX2 + FMA and
//! AVX-512 besides the baseline x86-64 and picked at run time
//! (`multiversion`). Other devices and dtypes use candle's ops.

use std::sync::Arc;

use candle_core::{
    CpuStorage, CustomOp1, D, DType, Device, Layout, Module, Result, Shape, Tensor, bail,
};
use candle_nn::VarBuilder;
use multiversion::multiversion;

use super::{
    exp::exp,
    gemm::{self, Bf16Kernel, Epilogue, Packed, Products},
};

/// What a model's weights are held in and how its dense layers multiply,
/// for `dtype` on `device`. On the CPU, bf16 is bf16 products in f32
/// tensors: the dense layers' GEMMs round weights and inputs to bf16 and
/// sum in f32 (`Products::Bf16`), and everything else (norms, softmax,
/// residuals) stays f32, which candle's bf16 ops would run several times
/// slower. Elsewhere the tensors are in `dtype`.
pub fn precision(device: &Device, dtype: DType) -> (DType, Products) {
    match (device.is_cpu(), dtype) {
        (true, DType::BF16) => {
            match gemm::bf16_kernel() {
                Bf16Kernel::Amx => tracing::info!("bf16 products run on AMX tiles"),
                Bf16Kernel::Dpbf16 => tracing::info!("bf16 products run on AVX-512 BF16"),
                Bf16Kernel::Widened => tracing::warn!(
                    "this CPU has neither AMX nor AVX-512 BF16: bf16 products run widened \
                     to f32, at about f32's speed"
                ),
            }
            (DType::F32, Products::Bf16)
        }
        _ => (dtype, Products::F32),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    /// The exact (erf) GELU of transformers' `"gelu"`.
    Gelu,
    /// OpenAI CLIP's `x · sigmoid(1.702 x)` (transformers' `"quick_gelu"`).
    QuickGelu,
    /// `min(max(x, 0), 6)` (EfficientNet-Lite).
    Relu6,
}

impl Activation {
    /// The packed GEMM's form of the activation, applied to each tile.
    pub(super) fn epilogue(self) -> Epilogue {
        match self {
            Self::Identity => Epilogue::Identity,
            Self::Relu6 => Epilogue::Relu6,
            Self::Gelu => Epilogue::Apply(gelu_in_place),
            Self::QuickGelu => Epilogue::Apply(quick_gelu_in_place),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`, as stored.
    weight: Tensor,
    bias: Tensor,
    act: Activation,
    products: Products,
    /// The weights packed for the CPU GEMM (f32 on the CPU only).
    packed: Option<Arc<Packed>>,
}

impl Linear {
    /// From `weight` `[out, in]` and `bias` `[out]`, f32 products.
    pub fn new(weight: Tensor, bias: Tensor, act: Activation) -> Result<Self> {
        Self::with_products(weight, bias, act, Products::F32)
    }

    /// As `new`; on the CPU, the GEMM multiplies as `products` says.
    pub fn with_products(
        weight: Tensor,
        bias: Tensor,
        act: Activation,
        products: Products,
    ) -> Result<Self> {
        let packed = if weight.device().is_cpu() && weight.dtype() == DType::F32 {
            let (out, inputs) = weight.dims2()?;
            Some(Arc::new(Packed::with_products(
                &weight.flatten_all()?.to_vec1::<f32>()?,
                &bias.to_vec1::<f32>()?,
                out,
                inputs,
                products,
            )))
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            act,
            products,
            packed,
        })
    }

    pub fn load(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        act: Activation,
        products: Products,
    ) -> Result<Self> {
        Self::with_products(
            vb.get((out_dim, in_dim), "weight")?,
            vb.get(out_dim, "bias")?,
            act,
            products,
        )
    }

    /// A layer stored without a bias (CLIP's projections): a zero one.
    pub fn load_unbiased(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = Tensor::zeros(out_dim, weight.dtype(), weight.device())?;
        Self::new(weight, bias, Activation::Identity)
    }

    /// The packed weights, where the layer runs on the CPU GEMM.
    pub fn packed(&self) -> Option<&Arc<Packed>> {
        self.packed.as_ref()
    }

    pub fn activation(&self) -> Activation {
        self.act
    }

    /// How its GEMM multiplies on the CPU.
    pub fn products(&self) -> Products {
        self.products
    }

    /// The dtype of its weights, and so of its outputs.
    pub fn dtype(&self) -> DType {
        self.weight.dtype()
    }

    /// Layers reading the same input as one GEMM (query, key and value),
    /// their outputs side by side, multiplied as the first's.
    pub fn stack(parts: &[Linear]) -> Result<Self> {
        let weights = parts.iter().map(|l| &l.weight).collect::<Vec<_>>();
        let biases = parts.iter().map(|l| &l.bias).collect::<Vec<_>>();
        Self::with_products(
            Tensor::cat(&weights, 0)?,
            Tensor::cat(&biases, 0)?,
            Activation::Identity,
            parts.first().map_or(Products::F32, |l| l.products),
        )
    }

    /// Each output channel times `gamma`'s: a following per-channel scale
    /// (DINOv2's layer scale) folded into the weights. Identity layers only.
    pub fn scale_outputs(self, gamma: &Tensor) -> Result<Self> {
        if self.act != Activation::Identity {
            bail!("only a linear output can absorb a scale");
        }
        Self::with_products(
            self.weight.broadcast_mul(&gamma.unsqueeze(1)?)?,
            (&self.bias * gamma)?,
            self.act,
            self.products,
        )
    }

    /// `forward(x) + residual` (a block's skip connection, `residual` of the
    /// output's shape): on CUDA added in the pass that adds the bias.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.forward_rows(x, Some(residual))
    }

    /// `x`: `[..., in]` → `[..., out]`, plus `residual` where given.
    fn forward_rows(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let Some((&in_dim, lead)) = x.dims().split_last() else {
            bail!("a linear layer needs an input of rank >= 1");
        };
        let rows = lead.iter().product::<usize>();
        let x = x.reshape((rows, in_dim))?;
        let y = match &self.packed {
            Some(packed) if x.device().is_cpu() => {
                let y = x.apply_op1_no_bwd(&Dense {
                    packed,
                    act: self.act,
                })?;
                match residual {
                    Some(r) => (&y + r.reshape(y.shape())?)?,
                    None => y,
                }
            }
            _ => self.forward_matmul(&x, residual)?,
        };
        let mut dims = lead.to_vec();
        dims.push(y.dim(D::Minus1)?);
        y.reshape(dims)
    }

    /// Off the CPU, on `[rows, in]`: candle's matmul, then the bias, the
    /// activation and `residual` (one kernel of ours on CUDA).
    fn forward_matmul(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        let residual = residual.map(|r| r.reshape(y.shape())).transpose()?;
        #[cfg(feature = "cuda")]
        if super::cuda::serves(&y) {
            return super::cuda::bias_act(&y, &self.bias, self.act, residual.as_ref());
        }
        let y = y.broadcast_add(&self.bias)?;
        let y = match self.act {
            Activation::Identity => y,
            Activation::Gelu => y.gelu_erf()?,
            Activation::QuickGelu => (&y * candle_nn::ops::sigmoid(&(&y * 1.702)?)?)?,
            Activation::Relu6 => y.clamp(0f32, 6f32)?,
        };
        match residual {
            Some(r) => y + r,
            None => Ok(y),
        }
    }
}

impl Module for Linear {
    /// `x`: `[..., in]` → `[..., out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_rows(x, None)
    }
}

/// The packed GEMM as a candle op on `[rows, in]`.
struct Dense<'a> {
    packed: &'a Packed,
    act: Activation,
}

impl CustomOp1 for Dense<'_> {
    fn name(&self) -> &'static str {
        "linear-packed"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = xs else {
            bail!("linear-packed supports f32 only");
        };
        let Some((x0, x1)) = xl.contiguous_offsets() else {
            bail!("linear-packed needs a contiguous input");
        };
        let &[rows, cols] = xl.dims() else {
            bail!("linear-packed input must be 2-D, got {:?}", xl.dims());
        };
        if cols != self.packed.k() {
            bail!("linear-packed takes {} inputs, got {cols}", self.packed.k());
        }
        let y = self.packed.forward(&x[x0..x1], rows, self.act.epilogue());
        Ok((CpuStorage::F32(y), Shape::from((rows, self.packed.n()))))
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn gelu_in_place(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = gelu(*v));
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn quick_gelu_in_place(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v /= 1.0 + exp(-1.702 * *v));
}

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, < 5e-7 in f32): the formula PyTorch's
/// vectorised CPU `erf` uses, so GELU here matches transformers on CPU.
/// Branch-free (`kernels/exp.rs`), so GELU over a tile vectorises.
///
/// `|x|` is capped at 9, where erf is ±1 in f32 already (from 3.92 on):
/// beyond it the correction term `r·t·e^(−x²)` fell below f32's normal
/// range, and each subnormal product took a microcode assist on Intel
/// cores, 4.2 against 0.5 ns per value for inputs in [−40, 40] (random
/// weights' MLP inputs reach there); the results are the same bits.
fn erf(x: f32) -> f32 {
    let a = x.abs().min(9.0);
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let r = 1.061_405_4f32
        .mul_add(t, -1.453_152)
        .mul_add(t, 1.421_413_8)
        .mul_add(t, -0.284_496_74)
        .mul_add(t, 0.254_829_6);
    (-(r * t) * exp(-a * a) + 1.0).copysign(x)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    /// Past the cap, erf is exactly ±1 and GELU exactly `x` or 0, as the
    /// uncapped formula gave (its correction term was below 1e-35).
    #[test]
    fn erf_saturates_past_its_cap() {
        for i in 0..=100_000 {
            let x = 9.0 + i as f32 * 1e-2;
            assert_eq!((erf(x), erf(-x)), (1.0, -1.0), "erf(±{x})");
            let x = x * std::f32::consts::SQRT_2;
            assert_eq!((gelu(x), gelu(-x)), (x, 0.0), "gelu(±{x})");
        }
        assert!(gelu(f32::NAN).is_nan());
    }

    #[test]
    fn erf_is_within_its_bound_everywhere() {
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let exact = libm::erf(f64::from(x));
            let err = (f64::from(erf(x)) - exact).abs();
            assert!(err < 5e-7, "erf({x}): {err}");
        }
    }

    #[test]
    fn matches_candle_linear_and_gelu() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.5, (7, 5), &dev)?;
        let b = Tensor::randn(0f32, 0.5, 7, &dev)?;
        let x = Tensor::randn(0f32, 2.0, (2, 3, 5), &dev)?;
        let reference = candle_nn::Linear::new(w.clone(), Some(b.clone())).forward(&x)?;
        for (act, expected) in [
            (Activation::Identity, reference.clone()),
            (Activation::Gelu, reference.gelu_erf()?),
            (
                Activation::QuickGelu,
                (&reference * candle_nn::ops::sigmoid(&(&reference * 1.702)?)?)?,
            ),
            (Activation::Relu6, reference.clamp(0f32, 6f32)?),
        ] {
            let layer = Linear::new(w.clone(), b.clone(), act)?;
            let got = layer.forward(&x)?;
            assert_eq!(got.dims(), &[2, 3, 7]);
            let diff = (got - expected)?.abs()?.max_all()?.to_dtype(DType::F32)?;
            let diff = diff.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{act:?}: max diff {diff}");
        }
        Ok(())
    }
}
