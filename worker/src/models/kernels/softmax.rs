//! Softmax over the last dimension on the CPU, vectorised (`kernels/exp.rs`),
//! for attention scores. candle-nn's `softmax_last_dim` calls libm's `expf`
//! one value at a time. Other devices use candle-nn's.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, bail};
use multiversion::multiversion;
use rayon::prelude::*;

use super::exp::exp;

/// Values per task: rows are split among threads in chunks of about this.
const CHUNK: usize = 16 * 1024;

/// Scores this far below their row's maximum get a weight of exactly 0
/// (e^−64 ≈ 1.6e-28 of the largest weight, invisible beside it in f32).
/// `exp`'s floor, e^−87, divided by the row's sum, lands below f32's normal
/// range, and a GEMM over denormal weights (attention's `p·v` on a peaked
/// row) ran 3.3x slower on a Xeon: each takes a microcode assist.
const NEGLIGIBLE: f32 = -64.0;

/// `e^(x − max)`, or 0 where that is negligible.
#[inline(always)]
fn weight(x: f32, max: f32) -> f32 {
    let d = x - max;
    if d < NEGLIGIBLE { 0.0 } else { exp(d) }
}

/// `softmax(x)` along the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || x.rank() == 0 {
        return candle_nn::ops::softmax_last_dim(x);
    }
    if x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&Softmax);
    }
    // Half precision in f32: candle-nn's CPU softmax sums in the input's
    // dtype, 4.6 % off on average for bf16 rows of 577 (PyTorch's, and
    // candle's CUDA kernel, sum in f32).
    softmax_last_dim(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = xs else {
            bail!("softmax-last-dim supports f32 only");
        };
        let Some((x0, x1)) = xl.contiguous_offsets() else {
            bail!("softmax-last-dim needs a contiguous input");
        };
        let dim = xl.dims().last().copied().unwrap_or(1).max(1);
        let mut y = x[x0..x1].to_vec();
        let rows = CHUNK.div_ceil(dim);
        y.par_chunks_mut(rows * dim)
            .for_each(|chunk| softmax_rows(chunk, dim));
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }
}

/// Each row of `dim` values in place. Maximum and sum go in 16 lanes, so
/// they vectorise (a single running `f32` is one long dependency chain).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn softmax_rows(values: &mut [f32], dim: usize) {
    for row in values.chunks_exact_mut(dim) {
        let (chunks, tail) = row.as_chunks_mut::<16>();
        let mut lanes = [f32::NEG_INFINITY; 16];
        // A compare and select, where `f32::max`'s care for NaN went one
        // lane at a time. A NaN score still makes the row NaN (at `exp`).
        for chunk in chunks.iter() {
            for (m, v) in lanes.iter_mut().zip(chunk) {
                *m = if *v > *m { *v } else { *m };
            }
        }
        let max = tail
            .iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |m, v| if *v > m { *v } else { m });
        let mut sums = [0f32; 16];
        for chunk in chunks.iter_mut() {
            for (s, v) in sums.iter_mut().zip(chunk) {
                *v = weight(*v, max);
                *s += *v;
            }
        }
        for v in tail.iter_mut() {
            *v = weight(*v, max);
        }
        let sum: f32 = sums.iter().chain(tail.iter()).sum();
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn matches_candle_nn_on_ragged_rows_and_masks() -> Result<()> {
        let dev = Device::Cpu;
        for shape in [(3, 1), (5, 7), (4, 16), (2, 577), (9, 40)] {
            let x = Tensor::randn(0f32, 4.0, shape, &dev)?;
            let want = candle_nn::ops::softmax_last_dim(&x)?;
            let got = softmax_last_dim(&x)?;
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "{shape:?}: {diff}");
        }
        // A causal mask: −∞ above the diagonal weighs nothing.
        let scores = Tensor::randn(0f32, 4.0, (6, 6), &dev)?;
        let mask: Vec<f32> = (0..36)
            .map(|i| {
                if i % 6 > i / 6 {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let masked = scores.broadcast_add(&Tensor::from_vec(mask, (6, 6), &dev)?)?;
        let want = candle_nn::ops::softmax_last_dim(&masked)?;
        let got = softmax_last_dim(&masked)?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "masked: {diff}");
        // Not contiguous: the transposed scores.
        let t = scores.t()?;
        let diff = (softmax_last_dim(&t)? - candle_nn::ops::softmax_last_dim(&t.contiguous()?)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "transposed: {diff}");
        Ok(())
    }

    #[test]
    fn negligible_weights_are_exact_zeros_not_denormals() -> Result<()> {
        // Rows of 40 (two vectors and a tail), every value tested in both.
        let mut row = vec![-30.0f32; 40];
        row[3] = 5.0;
        row[7] = 5.0 - 70.0;
        row[35] = f32::NEG_INFINITY;
        row[36] = 5.0 - 1000.0;
        row[37] = 5.0 - 60.0;
        let x = Tensor::from_vec(row, (1, 40), &Device::Cpu)?;
        let got = softmax_last_dim(&x)?.flatten_all()?.to_vec1::<f32>()?;
        for i in [7, 35, 36] {
            assert_eq!(got[i], 0.0, "weight {i}: {}", got[i]);
        }
        assert!(got.iter().all(|w| *w == 0.0 || w.is_normal()), "{got:?}");
        // e^−65 of the largest is dropped; e^−60 is not.
        assert!(got[37] > 0.0);
        let sum: f32 = got.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "{sum}");
        Ok(())
    }
}
