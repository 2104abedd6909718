//! The patches under a K×K window with TF "same" padding, for a dense
//! convolution run as one GEMM over them (EfficientNet's 3×3 stem).
//!
//! Built from candle's ops (padding, strided views of each tap, a concat)
//! the stem's patches cost three copies of a 12 MB tensor per batch of 8
//! and 5–7 % of the model in memmove and strided copies. On the CPU each
//! output row's patches are written in one pass over the input instead;
//! other devices use the strided views, which are correct everywhere.

use candle_core::{CpuStorage, CustomOp1, IndexOp, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::depthwise::same_padding;

/// `[B, H, W, C]` → `[B, H', W', K·K·C]`: each output pixel's patch under a
/// stride-`stride` K×K window with TF "same" padding (zeros), taps in
/// `[ky, kx, c]` order.
pub fn im2col_same(x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    if x.device().is_cpu() {
        return x.apply_op1_no_bwd(&Patches { k, stride });
    }
    strided(x, k, stride)
}

/// The same patches from strided views of the padded input, on any device.
fn strided(x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
    let (top, bottom) = same_padding(h, k, stride);
    let (left, right) = same_padding(w, k, stride);
    // `stride` extra zeros after each side let every tap take `out·stride`
    // rows and keep every `stride`-th.
    let padded =
        x.pad_with_zeros(1, top, bottom + stride)?
            .pad_with_zeros(2, left, right + stride)?;
    let wide = padded.dim(2)?;
    let mut taps = Vec::with_capacity(k * k);
    for ky in 0..k {
        let rows = padded
            .narrow(1, ky, oh * stride)?
            .reshape((b, oh, stride, wide, c))?
            .i((.., .., 0))?;
        for kx in 0..k {
            taps.push(
                rows.narrow(2, kx, ow * stride)?
                    .reshape((b, oh, ow, stride, c))?
                    .i((.., .., .., 0))?,
            );
        }
    }
    Tensor::cat(&taps, 3)
}

struct Patches {
    k: usize,
    stride: usize,
}

impl CustomOp1 for Patches {
    fn name(&self) -> &'static str {
        "im2col-same"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = xs else {
            bail!("im2col-same supports f32 only");
        };
        let Some((x0, x1)) = xl.contiguous_offsets() else {
            bail!("im2col-same needs a contiguous input");
        };
        let &[b, h, w, c] = xl.dims() else {
            bail!("im2col-same input must be 4-D, got {:?}", xl.dims());
        };
        let (k, s) = (self.k, self.stride);
        let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
        let (top, left) = (same_padding(h, k, s).0, same_padding(w, k, s).0);
        let x = &x[x0..x1];
        let patch = k * k * c;
        // Zeros where a tap falls in the padding.
        let mut out = vec![0f32; b * oh * ow * patch];
        out.par_chunks_mut(ow * patch)
            .enumerate()
            .for_each(|(row, out)| {
                let (image, oy) = (row / oh, row % oh);
                let image = &x[image * h * w * c..][..h * w * c];
                for ky in 0..k {
                    let Some(iy) = (oy * s + ky).checked_sub(top).filter(|&iy| iy < h) else {
                        continue;
                    };
                    let input = &image[iy * w * c..][..w * c];
                    for (ox, px) in out.chunks_exact_mut(patch).enumerate() {
                        for kx in 0..k {
                            if let Some(ix) = (ox * s + kx).checked_sub(left).filter(|&ix| ix < w) {
                                px[(ky * k + kx) * c..][..c].copy_from_slice(&input[ix * c..][..c]);
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, oh, ow, patch))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn one_pass_matches_the_strided_views() -> Result<()> {
        // The stem's shape, odd sizes, stride 1, a 5×5 window, more
        // channels; padding on every side.
        for (b, h, w, c, k, s) in [
            (2, 224, 224, 3, 3, 2),
            (2, 9, 7, 3, 3, 2),
            (1, 8, 10, 4, 3, 1),
            (1, 5, 6, 2, 5, 2),
            (3, 3, 2, 5, 5, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, (b, h, w, c), &Device::Cpu)?;
            let ours = im2col_same(&x, k, s)?;
            let views = strided(&x, k, s)?;
            assert_eq!(ours.dims(), views.dims());
            let diff = (ours - views)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{b}x{h}x{w}x{c}, {k}x{k}, stride {s}");
        }
        Ok(())
    }
}
