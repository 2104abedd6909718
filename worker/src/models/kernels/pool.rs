//! Global average pooling of NHWC activations on the CPU: the mean over
//! each image's pixels, per channel. candle's `mean` over the middle
//! dimension of `[B, H·W, C]` is a strided reduction, one value at a
//! time (2.6 % of EfficientNet-Lite0 at batch 8); here each pixel's
//! channels are added to a row of sums, which vectorises. A 1×1 layer
//! followed by the pooling (EfficientNet's head) is one op that never
//! makes the layer's map. Other devices and dtypes use candle's ops.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor, bail};
use multiversion::multiversion;
use rayon::prelude::*;

use super::{
    gemm::{Epilogue, NR, Packed, Part},
    linear::Linear,
    lines::Scratch,
    tasks_per_image,
};

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

/// `x`: `[B, H, W, in]` → `[B, out]`: `linear` over every pixel, then the
/// mean over each image's pixels (EfficientNet's head and pooling). On the
/// CPU no `[B, H, W, out]` map is made: each task computes some columns of
/// one image's map into a scratch buffer of its own and adds its rows into
/// the image's sums, in the order `mean_pixels` adds them, so the result
/// is the same to the bit. At batch 1 the map (49 × 1280) was split by
/// columns into fresh buffers, copied into place, then read again to pool.
pub fn linear_mean_pixels(linear: &Linear, x: &Tensor) -> Result<Tensor> {
    match linear.packed() {
        Some(packed) if x.device().is_cpu() && x.dtype() == DType::F32 => {
            x.contiguous()?.apply_op1_no_bwd(&LinearMeanPixels {
                packed,
                epilogue: linear.activation().epilogue(),
            })
        }
        _ => mean_pixels(&linear.forward(x)?),
    }
}

struct LinearMeanPixels<'a> {
    packed: &'a Packed,
    epilogue: Epilogue,
}

impl CustomOp1 for LinearMeanPixels<'_> {
    fn name(&self) -> &'static str {
        "linear-mean-pixels"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = xs else {
            bail!("linear-mean-pixels supports f32 only");
        };
        let Some((x0, x1)) = xl.contiguous_offsets() else {
            bail!("linear-mean-pixels needs a contiguous input");
        };
        let &[b, h, w, c] = xl.dims() else {
            bail!(
                "linear-mean-pixels input must be [B, H, W, C], got {:?}",
                xl.dims()
            );
        };
        let (packed, pixels) = (self.packed, h * w);
        if c != packed.k() {
            bail!("linear-mean-pixels takes {} channels, got {c}", packed.k());
        }
        let (n, panels) = (packed.n(), packed.panels());
        let mut y = vec![0f32; b * n];
        if pixels * c * n == 0 {
            return Ok((CpuStorage::F32(y), Shape::from((b, n))));
        }
        // Each image's columns in as many ranges of panels as give every
        // thread the same number of tasks.
        let groups = tasks_per_image(b).min(panels);
        let mut tasks = Vec::with_capacity(b * groups);
        for (sums, image) in y
            .chunks_exact_mut(n)
            .zip(x[x0..x1].chunks_exact(pixels * c))
        {
            let mut rest = sums;
            for g in 0..groups {
                let (p0, p1) = (g * panels / groups, (g + 1) * panels / groups);
                let width = (p1 * NR).min(n) - p0 * NR;
                let (sums, tail) = std::mem::take(&mut rest).split_at_mut(width);
                tasks.push((image, p0..p1, sums));
                rest = tail;
            }
        }
        tasks.into_par_iter().for_each(|(image, panels, sums)| {
            let mut map = Scratch::take(pixels * sums.len());
            let part = Part {
                panels,
                inputs: 0..c,
                bias: true,
            };
            packed.part_into(image, part, &mut map, self.epilogue);
            add_rows(sums, &map);
            let count = pixels as f32;
            sums.iter_mut().for_each(|s| *s /= count);
        });
        Ok((CpuStorage::F32(y), Shape::from((b, n))))
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

    use super::{super::linear::Activation, *};

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

    #[test]
    fn linear_then_mean_is_the_same_fused() -> Result<()> {
        let dev = Device::Cpu;
        // EfficientNet-Lite0's head at batch 1 and 3 (each image split by
        // columns on two threads), and widths that end in partial tiles.
        for (shape, out, act) in [
            ((1, 7, 7, 320), 1280, Activation::Relu6),
            ((3, 7, 7, 320), 1280, Activation::Relu6),
            ((2, 3, 5, 17), 40, Activation::Identity),
            ((1, 2, 2, 9), 7, Activation::Relu6),
        ] {
            let x = Tensor::randn(0f32, 1.0, shape, &dev)?;
            let weight = Tensor::randn(0f32, 0.3, (out, shape.3), &dev)?;
            let bias = Tensor::randn(0f32, 0.5, out, &dev)?;
            let linear = Linear::new(weight, bias, act)?;
            for threads in [1, 2] {
                let run = || -> Result<(Vec<f32>, Vec<f32>)> {
                    let want = mean_pixels(&linear.forward(&x)?)?;
                    let got = linear_mean_pixels(&linear, &x)?;
                    assert_eq!(got.dims(), &[shape.0, out]);
                    Ok((
                        got.flatten_all()?.to_vec1()?,
                        want.flatten_all()?.to_vec1()?,
                    ))
                };
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a pool");
                let (got, want) = pool.install(run)?;
                assert_eq!(got, want, "{shape:?} -> {out} on {threads} threads");
            }
        }
        Ok(())
    }
}
