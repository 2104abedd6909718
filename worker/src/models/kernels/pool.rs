//! Global average pooling of NHWC activations on the CPU: the mean over
//! each image's pixels, per channel. candle's `mean` over the middle
//! dimension of `[B, H·W, C]` is a strided reduction, one value at a
//! time (2.6 % of EfficientNet-Lite0 at batch 8); here each pixel's
//! channels are added to a row of sums, which vectorises. Other devices
//! and dtypes use candle's `mean`.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, bail};
use multiversion::multiversion;

/// `x`: `[B, H, W, C]` → `[B, C]`.
pub fn mean_pixels(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&MeanPixels);
    }
    x.flatten(1, 2)?.mean(1)
}

struct MeanPixels;

impl CustomOp1 for MeanPixels {
    fn name(&self) -> &'static str {
        "mean-pixels"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = xs else {
            bail!("mean-pixels supports f32 only");
        };
        let Some((x0, x1)) = xl.contiguous_offsets() else {
            bail!("mean-pixels needs a contiguous input");
        };
        let &[b, h, w, c] = xl.dims() else {
            bail!(
                "mean-pixels input must be [B, H, W, C], got {:?}",
                xl.dims()
            );
        };
        let mut y = vec![0f32; b * c];
        if h * w * c > 0 {
            for (sums, image) in y.chunks_exact_mut(c).zip(x[x0..x1].chunks_exact(h * w * c)) {
                add_rows(sums, image);
                let pixels = (h * w) as f32;
                sums.iter_mut().for_each(|s| *s /= pixels);
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((b, c))))
    }
}

/// `sums += ` every row of `rows` (rows `sums.len()` long).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn add_rows(sums: &mut [f32], rows: &[f32]) {
    for row in rows.chunks_exact(sums.len()) {
        for (s, v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn matches_candles_mean_over_pixels() -> Result<()> {
        for shape in [(2, 7, 7, 1280), (1, 1, 1, 3), (3, 2, 5, 17)] {
            let x = Tensor::randn(0f32, 3.0, shape, &Device::Cpu)?;
            let want = x.flatten(1, 2)?.mean(1)?;
            let got = mean_pixels(&x)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{shape:?}: {diff}");
        }
        Ok(())
    }
}
