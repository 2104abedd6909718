//! Depthwise 2-D convolution with TF "same" padding.
//!
//! candle runs a grouped convolution as one convolution per group, which for
//! a depthwise layer of 1152 channels is 1152 im2col + matmul calls. This op
//! does the same arithmetic directly, one channel plane per task on CPU; other
//! devices use candle's grouped convolution, which is correct everywhere.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Padding that makes a stride-`stride` convolution output `ceil(input / stride)`,
/// split as TensorFlow does: the odd pixel goes after.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let output = input.div_ceil(stride);
    let total = ((output - 1) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// `x`: [B, C, H, W]; `w`: [C, 1, K, K]. Returns [B, C, ceil(H/s), ceil(W/s)].
pub fn depthwise_same(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    if x.device().is_cpu() {
        return x.apply_op2_no_bwd(w, &Depthwise { stride });
    }
    let (_, c, h, wd) = x.dims4()?;
    let k = w.dim(3)?;
    let (top, bottom) = same_padding(h, k, stride);
    let (left, right) = same_padding(wd, k, stride);
    x.pad_with_zeros(2, top, bottom)?
        .pad_with_zeros(3, left, right)?
        .conv2d(w, 0, stride, 1, c)
}

struct Depthwise {
    stride: usize,
}

impl CustomOp2 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-same"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (xs, ws) else {
            bail!("depthwise-same supports f32 only");
        };
        let (Some((x0, x1)), Some((w0, w1))) = (xl.contiguous_offsets(), wl.contiguous_offsets())
        else {
            bail!("depthwise-same needs contiguous inputs");
        };
        let (x, w) = (&x[x0..x1], &w[w0..w1]);
        let &[b, c, h, wd] = xl.dims() else {
            bail!("depthwise-same input must be 4-D, got {:?}", xl.dims());
        };
        let &[wc, 1, k, k2] = wl.dims() else {
            bail!(
                "depthwise-same kernel must be [C, 1, K, K], got {:?}",
                wl.dims()
            );
        };
        if wc != c || k != k2 {
            bail!(
                "depthwise-same kernel {:?} does not fit input {:?}",
                wl.dims(),
                xl.dims()
            );
        }
        let s = self.stride;
        let (oh, ow) = (h.div_ceil(s), wd.div_ceil(s));
        let (top, _) = same_padding(h, k, s);
        let (left, _) = same_padding(wd, k, s);
        // Per kernel column, the output columns whose input column lies
        // inside the image: no bounds test in the inner loop, which then
        // vectorises (stride 1) or at least stays branch-free (stride 2).
        let columns: Vec<(usize, usize, usize)> = (0..k)
            .map(|kx| {
                let lo = left.saturating_sub(kx).div_ceil(s);
                let hi = if wd + left > kx {
                    ((wd + left - kx - 1) / s + 1).min(ow)
                } else {
                    0
                };
                (lo, hi.max(lo), kx)
            })
            .collect();
        let mut out = vec![0f32; b * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .with_min_len(8)
            .enumerate()
            .for_each(|(plane, dst)| {
                let ch = plane % c;
                let src = &x[plane * h * wd..(plane + 1) * h * wd];
                let kern = &w[ch * k * k..(ch + 1) * k * k];
                for oy in 0..oh {
                    let row = &mut dst[oy * ow..(oy + 1) * ow];
                    for ky in 0..k {
                        let Some(iy) = (oy * s + ky).checked_sub(top).filter(|&iy| iy < h) else {
                            continue;
                        };
                        let line = &src[iy * wd..(iy + 1) * wd];
                        for &(lo, hi, kx) in &columns {
                            let wv = kern[ky * k + kx];
                            let first = lo * s + kx - left;
                            let outs = &mut row[lo..hi];
                            if s == 1 {
                                for (o, v) in outs.iter_mut().zip(&line[first..]) {
                                    *o += wv * v;
                                }
                            } else {
                                for (o, v) in outs.iter_mut().zip(line[first..].iter().step_by(s)) {
                                    *o += wv * v;
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, c, oh, ow))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn reference(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
        let (_, c, h, wd) = x.dims4()?;
        let k = w.dim(3)?;
        let (t, b) = same_padding(h, k, stride);
        let (l, r) = same_padding(wd, k, stride);
        x.pad_with_zeros(2, t, b)?
            .pad_with_zeros(3, l, r)?
            .conv2d(w, 0, stride, 1, c)
    }

    #[test]
    fn tf_same_padding_puts_the_odd_pixel_after() {
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(112, 3, 1), (1, 1));
        assert_eq!(same_padding(28, 5, 2), (1, 2));
        assert_eq!(same_padding(14, 5, 1), (2, 2));
    }

    #[test]
    fn matches_candles_grouped_convolution() -> Result<()> {
        let dev = Device::Cpu;
        for (h, w, k, s) in [(9, 7, 3, 1), (9, 7, 3, 2), (12, 12, 5, 2), (5, 6, 5, 1)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev)?;
            let kern = Tensor::randn(0f32, 1.0, (3, 1, k, k), &dev)?;
            let ours = depthwise_same(&x, &kern, s)?;
            let theirs = reference(&x, &kern, s)?;
            assert_eq!(ours.dims(), theirs.dims());
            let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "h={h} w={w} k={k} s={s}: max diff {diff}");
        }
        Ok(())
    }
}
