//! The patches under a K×K window with TF "same" padding, for a dense
//! convolution run as one GEMM over them (EfficientNet's 3×3 stem), from
//! candle's ops (padding, strided views of each tap, a concat): correct on
//! every device. On the CPU the stem runs as `kernels/stem.rs` instead,
//! which never writes the patches out whole.

use candle_core::{IndexOp, Result, Tensor};

use super::depthwise::same_padding;

/// `[B, H, W, C]` → `[B, H', W', K·K·C]`: each output pixel's patch under a
/// stride-`stride` K×K window with TF "same" padding (zeros), taps in
/// `[ky, kx, c]` order.
pub fn im2col_same(x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
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
