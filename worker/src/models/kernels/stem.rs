//! A CNN's first convolution (K×K over all input channels, TF "same"
//! padding) straight from the producer's u8 NHWC pixels, by bands of
//! output rows, on the CPU.
//!
//! As separate ops, the pixels became f32 (one pass), were normalised
//! (another), and their patches were written out whole (27 values per
//! output pixel, 1.35 MB per 224² image) before one GEMM read them back:
//! at batch 1 the stem took 0.6-0.9 ms of EfficientNet-Lite0's 6, three
//! times ONNX Runtime's, and mostly not in the GEMM (a 3-value copy per
//! tap was a call to memmove). Here each task converts and normalises only
//! the input rows its next band of output rows reads, into a zero-padded
//! row buffer, copies each output pixel's patch from it (one run of `K·C`
//! values per kernel row, a constant length for the stem's 3×3×3), and
//! runs the packed GEMM over the band while its patches are in cache.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, bail};
use rayon::prelude::*;

use super::{
    depthwise::same_padding,
    gemm::{Epilogue, Packed},
    lines::Scratch,
    tasks_per_image,
};

/// Patches a band holds: a band's GEMM reads them from L2.
const BAND_BYTES: usize = 128 << 10;

#[derive(Clone, Debug)]
pub struct Stem {
    /// `[out, K·K·C]`, taps in `[ky, kx, c]` order.
    pub patches: Arc<Packed>,
    pub kernel: usize,
    pub stride: usize,
    /// Each input value `v` enters as `v · scale + shift`; the padding is 0
    /// after that.
    pub scale: f32,
    pub shift: f32,
    /// Applied to the output (the folded batch norm's activation).
    pub epilogue: Epilogue,
}

/// The layer's shape, as one band needs it.
pub(super) struct Geometry {
    h: usize,
    w: usize,
    c: usize,
    top: usize,
    left: usize,
    /// Output height and width.
    pub(super) oh: usize,
    pub(super) ow: usize,
    /// Padded input width: what the taps span, `(ow − 1)·stride + kernel`,
    /// or the image where that is narrower.
    wide: usize,
}

impl Stem {
    /// The layer's shape over `[h, w, c]` pixels.
    pub(super) fn geometry(&self, h: usize, w: usize, c: usize) -> Result<Geometry> {
        let (k, s) = (self.kernel, self.stride);
        if k * k * c != self.patches.k() {
            bail!(
                "conv-stem takes {} values per patch, {k}x{k}x{c} is {}",
                self.patches.k(),
                k * k * c
            );
        }
        let ow = w.div_ceil(s);
        Ok(Geometry {
            h,
            w,
            c,
            top: same_padding(h, k, s).0,
            left: same_padding(w, k, s).0,
            oh: h.div_ceil(s),
            ow,
            // Wider than the image only where the padding lies outside it.
            wide: ((ow.max(1) - 1) * s + k).max(w),
        })
    }

    /// Output rows `[o0, o0 + rows)` of one image into `dst`.
    pub(super) fn rows(&self, image: &[u8], g: &Geometry, o0: usize, dst: &mut [f32]) {
        let (k, s, n) = (self.kernel, self.stride, self.patches.n());
        let patch = k * k * g.c;
        let end = o0 + dst.len() / (g.ow * n);
        let band = (BAND_BYTES / (g.ow * patch * 4)).clamp(1, end - o0);
        let span = (band - 1) * s + k;
        let mut padded = Scratch::take(span * g.wide * g.c);
        let mut patches = Scratch::take(band * g.ow * patch);
        for b0 in (o0..end).step_by(band) {
            let b1 = (b0 + band).min(end);
            // Padded input rows from `b0·s − top`, converted once each.
            let rows = (b1 - b0 - 1) * s + k;
            for (r, row) in padded.chunks_exact_mut(g.wide * g.c).take(rows).enumerate() {
                let iy = (b0 * s + r).checked_sub(g.top).filter(|&iy| iy < g.h);
                self.convert_row(iy.map(|iy| &image[iy * g.w * g.c..][..g.w * g.c]), g, row);
            }
            let band_patches = &mut patches[..(b1 - b0) * g.ow * patch];
            for (oy, out) in band_patches.chunks_exact_mut(g.ow * patch).enumerate() {
                for (ox, px) in out.chunks_exact_mut(patch).enumerate() {
                    for (ky, taps) in px.chunks_exact_mut(k * g.c).enumerate() {
                        let row = &padded[(oy * s + ky) * g.wide * g.c..];
                        copy_taps(taps, &row[ox * s * g.c..][..k * g.c]);
                    }
                }
            }
            let out = &mut dst[(b0 - o0) * g.ow * n..(b1 - o0) * g.ow * n];
            self.patches.forward_into(band_patches, out, self.epilogue);
        }
    }

    /// One padded input row: zeros, then the input row `v · scale + shift`
    /// from column `left` when it lies inside the image.
    fn convert_row(&self, input: Option<&[u8]>, g: &Geometry, row: &mut [f32]) {
        row.fill(0.0);
        if let Some(input) = input {
            let inside = &mut row[g.left * g.c..][..input.len()];
            for (o, &v) in inside.iter_mut().zip(input) {
                *o = f32::from(v) * self.scale + self.shift;
            }
        }
    }
}

/// One kernel row of a patch. A length known at compile time is a few
/// vector moves; any other is a call to memmove per run.
#[inline(always)]
fn copy_taps(dst: &mut [f32], src: &[f32]) {
    match (
        <&mut [f32; 9]>::try_from(&mut *dst),
        <&[f32; 9]>::try_from(src),
    ) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => dst.copy_from_slice(src),
    }
}

impl CustomOp1 for Stem {
    fn name(&self) -> &'static str {
        "conv-stem"
    }

    /// `x`: u8 `[B, H, W, C]` → f32 `[B, ceil(H/s), ceil(W/s), out]`.
    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::U8(x) = xs else {
            bail!("conv-stem takes u8 pixels");
        };
        let Some((x0, x1)) = xl.contiguous_offsets() else {
            bail!("conv-stem needs a contiguous input");
        };
        let &[batch, h, w, c] = xl.dims() else {
            bail!("conv-stem input must be 4-D, got {:?}", xl.dims());
        };
        let n = self.patches.n();
        let g = self.geometry(h, w, c)?;
        let (oh, ow) = (g.oh, g.ow);
        let x = &x[x0..x1];
        let mut y = super::output(batch, batch * oh * ow * n);
        if !y.is_empty() {
            let rows = oh.div_ceil(tasks_per_image(batch).min(oh));
            y.par_chunks_mut(oh * ow * n)
                .zip(x.par_chunks(h * w * c))
                .flat_map(|(out, image)| {
                    out.par_chunks_mut(rows * ow * n)
                        .enumerate()
                        .map(move |(i, out)| (image, i * rows, out))
                })
                .for_each(|(image, o0, out)| self.rows(image, &g, o0, out));
        }
        Ok((CpuStorage::F32(y), Shape::from((batch, oh, ow, n))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Module, Tensor};

    use super::*;
    use crate::models::kernels::{
        im2col::im2col_same,
        linear::{Activation, Linear},
    };

    #[test]
    fn matches_normalise_then_patches_then_dense() -> Result<()> {
        let dev = Device::Cpu;
        // The stem's shape, odd sizes, stride 1, a 5×5 window, more
        // channels (patch rows of other lengths than 9), one-row images;
        // padding on every side, batches that split images between
        // threads and that do not.
        for (b, h, w, c, k, s, out) in [
            (2, 224, 224, 3, 3, 2, 32),
            (1, 9, 7, 3, 3, 2, 8),
            (3, 8, 10, 4, 3, 1, 24),
            (1, 5, 6, 2, 5, 2, 40),
            (2, 1, 5, 3, 3, 1, 16),
        ] {
            let pixels: Vec<u8> = (0..b * h * w * c).map(|i| (i * 37 % 256) as u8).collect();
            let x = Tensor::from_vec(pixels, (b, h, w, c), &dev)?;
            let weight = Tensor::randn(0f32, 0.3, (out, k * k * c), &dev)?;
            let bias = Tensor::randn(0f32, 0.3, out, &dev)?;
            let (scale, shift) = (1.0 / 128.0, -127.0 / 128.0);
            let dense = Linear::new(weight, bias, Activation::Relu6)?;
            let normalised = x.to_dtype(DType::F32)?.affine(scale, shift)?;
            let want = dense.forward(&im2col_same(&normalised, k, s)?)?;
            let stem = Stem {
                patches: dense.packed().cloned().expect("packed on the CPU"),
                kernel: k,
                stride: s,
                scale: scale as f32,
                shift: shift as f32,
                epilogue: Epilogue::Relu6,
            };
            let got = x.apply_op1_no_bwd(&stem)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{b}x{h}x{w}x{c}, {k}x{k}, stride {s}: {diff}");
        }
        Ok(())
    }
}
