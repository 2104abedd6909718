//! Depthwise 2-D convolution on NHWC activations with TF "same" padding,
//! the folded batch norm's bias and ReLU6 fused in.
//!
//! In NHWC a pixel's channels sit side by side, so each of the K×K taps is
//! one multiply-add across every channel at once, which vectorises; candle
//! runs a grouped convolution as one im2col + matmul per channel (1152 of
//! them in EfficientNet-Lite0's widest layer). The loop is compiled for
//! AVX2 + FMA and AVX-512 besides the baseline x86-64 (SSE2 only) and picked
//! at run time (`multiversion`); with AVX-512, rows at least 7 output
//! pixels wide go in runs written with intrinsics (`avx512.rs`), except
//! where the input rows are 7 or 14 pixels wide, which have shapes of
//! their own (`Narrow`). On
//! CUDA devices the same loop runs as a
//! kernel of ours (`kernels/cuda.rs`): candle's grouped convolution there
//! is over a thousand launches for one layer. Other devices and dtypes use
//! it, which is correct everywhere.

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, bail};
use multiversion::{multiversion, target::target_cfg_f};
use rayon::prelude::*;

/// Padding that makes a stride-`stride` convolution output `ceil(input / stride)`,
/// split as TensorFlow does: the odd pixel goes after.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let output = input.div_ceil(stride);
    let total = ((output - 1) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// `x`: `[B, H, W, C]`; `w`: `[K, K, C]`; `bias`: `[C]`. Returns
/// `[B, ceil(H/s), ceil(W/s), C]`, clamped to [0, 6] if `relu6`.
pub fn depthwise_nhwc(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    stride: usize,
    relu6: bool,
) -> Result<Tensor> {
    if x.dtype() == DType::F32 && (x.device().is_cpu() || x.device().is_cuda()) {
        return x
            .contiguous()?
            .apply_op3_no_bwd(w, bias, &Depthwise { stride, relu6 });
    }
    let (_, h, wd, c) = x.dims4()?;
    let k = w.dim(0)?;
    let (top, bottom) = same_padding(h, k, stride);
    let (left, right) = same_padding(wd, k, stride);
    let y = x
        .permute((0, 3, 1, 2))?
        .pad_with_zeros(2, top, bottom)?
        .pad_with_zeros(3, left, right)?
        .conv2d(
            &w.permute((2, 0, 1))?.unsqueeze(1)?.contiguous()?,
            0,
            stride,
            1,
            c,
        )?
        .permute((0, 2, 3, 1))?
        .broadcast_add(bias)?;
    if relu6 { y.clamp(0f32, 6f32) } else { Ok(y) }
}

struct Depthwise {
    stride: usize,
    relu6: bool,
}

/// What one output row needs to know of the layer.
pub(super) struct Geometry {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub k: usize,
    pub stride: usize,
    pub top: usize,
    pub left: usize,
    pub relu6: bool,
}

impl Depthwise {
    /// The layer's shape from its operands' layouts: batch, output height
    /// and width, and what each output row needs.
    fn geometry(
        &self,
        xl: &Layout,
        wl: &Layout,
        bl: &Layout,
    ) -> Result<(usize, usize, usize, Geometry)> {
        let &[batch, h, wd, c] = xl.dims() else {
            bail!("depthwise-nhwc input must be 4-D, got {:?}", xl.dims());
        };
        let &[k, k2, wc] = wl.dims() else {
            bail!(
                "depthwise-nhwc kernel must be [K, K, C], got {:?}",
                wl.dims()
            );
        };
        if wc != c || k != k2 || bl.dims() != [c] {
            bail!(
                "depthwise-nhwc kernel {:?} and bias {:?} do not fit input {:?}",
                wl.dims(),
                bl.dims(),
                xl.dims()
            );
        }
        let s = self.stride;
        let g = Geometry {
            h,
            w: wd,
            c,
            k,
            stride: s,
            top: same_padding(h, k, s).0,
            left: same_padding(wd, k, s).0,
            relu6: self.relu6,
        };
        Ok((batch, h.div_ceil(s), wd.div_ceil(s), g))
    }
}

impl CustomOp3 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-nhwc"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) = (xs, ws, bs) else {
            bail!("depthwise-nhwc supports f32 only");
        };
        let (Some((x0, x1)), Some((w0, w1)), Some((b0, b1))) = (
            xl.contiguous_offsets(),
            wl.contiguous_offsets(),
            bl.contiguous_offsets(),
        ) else {
            bail!("depthwise-nhwc needs contiguous inputs");
        };
        let (x, w, b) = (&x[x0..x1], &w[w0..w1], &b[b0..b1]);
        let (batch, oh, ow, g) = self.geometry(xl, wl, bl)?;
        let (h, wd, c) = (g.h, g.w, g.c);
        let mut out = vec![0f32; batch * oh * ow * c];
        out.par_chunks_mut(ow * c)
            .enumerate()
            .for_each(|(row, dst)| {
                let image = &x[(row / oh) * h * wd * c..][..h * wd * c];
                output_row(dst, image, h, w, b, &g, row % oh);
            });
        Ok((CpuStorage::F32(out), Shape::from((batch, oh, ow, c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (batch, oh, ow, g) = self.geometry(xl, wl, bl)?;
        let y = super::cuda::depthwise_nhwc([(xs, xl), (ws, wl), (bs, bl)], batch, &g)?;
        Ok((y, Shape::from((batch, oh, ow, g.c))))
    }
}

/// Output row `oy` of one image: per pixel, the bias plus every tap that
/// falls inside the image. `rows` holds input row `iy` in row slot `iy %
/// slots`: the whole image (`slots` its height), or a ring of the rows
/// that a band of output rows reaches (`kernels/mbconv.rs`). Channels
/// go in blocks, each block over the whole row: its kernel slice stays in
/// L1 from pixel to pixel, and its sums stay in registers across all taps
/// (two loads per multiply-add rather than three and a store).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn output_row(
    dst: &mut [f32],
    rows: &[f32],
    slots: usize,
    w: &[f32],
    bias: &[f32],
    g: &Geometry,
    oy: usize,
) {
    let c = g.c;
    let wide = target_cfg_f!(target_feature = "avx512f");
    if wide {
        // EfficientNet-Lite0's 7- and 14-pixel rows, each shape compiled
        // on its own (`Narrow`).
        let narrow = Narrow {
            rows,
            slots,
            w,
            bias,
            g,
            oy,
        };
        match (g.w, g.k, g.stride) {
            (7, 3, 1) => return narrow.row::<7, 3, 1>(dst),
            (7, 5, 1) => return narrow.row::<7, 5, 1>(dst),
            (14, 3, 1) => return narrow.row::<14, 3, 1>(dst),
            (14, 5, 1) => return narrow.row::<14, 5, 1>(dst),
            (14, 3, 2) => return narrow.row::<14, 3, 2>(dst),
            (14, 5, 2) => return narrow.row::<14, 5, 2>(dst),
            _ => {}
        }
    }
    // Wider rows go in runs of pixels with AVX-512 intrinsics, their
    // channels in blocks of 16; the rest below.
    #[cfg(target_arch = "x86_64")]
    let done = match (wide, g.k, g.stride) {
        (true, 3, 1) => runs::<3, 1, 9, 8>(dst, rows, slots, w, bias, g, oy),
        (true, 5, 1) => runs::<5, 1, 11, 9>(dst, rows, slots, w, bias, g, oy),
        (true, 3, 2) => runs::<3, 2, 15, 14>(dst, rows, slots, w, bias, g, oy),
        (true, 5, 2) => runs::<5, 2, 17, 15>(dst, rows, slots, w, bias, g, oy),
        _ => 0,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    if done == c {
        return;
    }
    let inside = |o: usize, size: usize, pad: usize| {
        (0..g.k).filter_map(move |t| {
            (o * g.stride + t)
                .checked_sub(pad)
                .filter(|&i| i < size)
                .map(|i| (t, i))
        })
    };
    // The (input offset, kernel offset) of each tap inside the image.
    // Pixels whose horizontal taps all fall inside (`lo..hi`) share one
    // list, relative to their first tap's input pixel; only the edges get
    // lists of their own. A list per pixel cost as much as the
    // multiply-adds at 32 channels (EfficientNet's first block).
    let width = dst.len() / c;
    let lo = g.left.div_ceil(g.stride).min(width);
    let hi = (g.w + g.left)
        .checked_sub(g.k)
        .map_or(lo, |last| (last / g.stride + 1).clamp(lo, width));
    let mut taps = Vec::with_capacity(g.k * g.k * (1 + width - (hi - lo)));
    for (ky, iy) in inside(oy, g.h, g.top) {
        for kx in 0..g.k {
            taps.push((((iy % slots) * g.w + kx) * c, (ky * g.k + kx) * c));
        }
    }
    let shared = taps.len();
    // Per output pixel: where its taps' offsets count from, and its list
    // `taps[start..end]`.
    let mut spans = Vec::with_capacity(width);
    for ox in 0..width {
        if (lo..hi).contains(&ox) {
            spans.push(((ox * g.stride - g.left) * c, 0, shared));
            continue;
        }
        let start = taps.len();
        for (ky, iy) in inside(oy, g.h, g.top) {
            for (kx, ix) in inside(ox, g.w, g.left) {
                taps.push((((iy % slots) * g.w + ix) * c, (ky * g.k + kx) * c));
            }
        }
        spans.push((0, start, taps.len()));
    }
    // Groups of interior pixels keep 8 vector registers of sums in flight:
    // two FMA pipes of latency 4 need 8 independent chains, and each
    // weight loaded serves every pixel of the group. With AVX-512 a pixel's
    // 64 channels are 4 registers (2 pixels a group) and 32 are 2 (4
    // pixels); with AVX2 they are 8 and 4 (1 and 2 pixels).
    let interior = |ox: usize, p: usize| ox >= lo && ox + p <= hi;
    // No closure does arithmetic here: it would not inherit the target
    // features, and `mul_add` without FMA is a libm call.
    let step = g.stride * c;
    let mut ch = done;
    for n in [64, 32, 8, 1] {
        while ch + n <= c {
            let mut ox = 0;
            while ox < width {
                let (base, start, end) = spans[ox];
                let (rows, taps) = (&rows[base..], &taps[start..end]);
                let dst = &mut dst[ox * c..];
                ox += match n {
                    64 if wide && interior(ox, 2) => {
                        pixels::<64, 2>(dst, rows, w, bias, taps, (ch, c), step, g.relu6)
                    }
                    64 => pixels::<64, 1>(dst, rows, w, bias, taps, (ch, c), step, g.relu6),
                    32 if wide && interior(ox, 4) => {
                        pixels::<32, 4>(dst, rows, w, bias, taps, (ch, c), step, g.relu6)
                    }
                    32 if interior(ox, 2) => {
                        pixels::<32, 2>(dst, rows, w, bias, taps, (ch, c), step, g.relu6)
                    }
                    32 => pixels::<32, 1>(dst, rows, w, bias, taps, (ch, c), step, g.relu6),
                    8 if interior(ox, 8) => {
                        pixels::<8, 8>(dst, rows, w, bias, taps, (ch, c), step, g.relu6)
                    }
                    8 => pixels::<8, 1>(dst, rows, w, bias, taps, (ch, c), step, g.relu6),
                    _ => pixels::<1, 1>(dst, rows, w, bias, taps, (ch, c), step, g.relu6),
                };
            }
            ch += n;
        }
    }
}

/// Channels `0..16·⌊c/16⌋` of output row `oy` (as `output_row`) in runs
/// of `avx512::RUN` pixels, where the row is at least one run wide;
/// returns the channels done. A last run that would pass the row's end
/// starts earlier, overlapping the run before it. `X` is the input pixels
/// a run reaches, `(RUN − 1)·S + K`, and `XR` those of a row's last run
/// that lie inside it with TF "same" padding, `X − ⌊K/2⌋`; a row's first
/// run starts `g.left` inputs before the row. Those two runs' taps in the
/// padding are settled when compiled: checked one by one, they kept the
/// loads of the 5×5 rows' edge runs (half their runs at 28 pixels) from
/// merging.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn runs<const K: usize, const S: usize, const X: usize, const XR: usize>(
    dst: &mut [f32],
    rows: &[f32],
    slots: usize,
    w: &[f32],
    bias: &[f32],
    g: &Geometry,
    oy: usize,
) -> usize {
    use avx512::{KernelRow, LANES, RUN, Span};
    const { assert!(X == (RUN - 1) * S + K && XR == X - K / 2) };
    let c = g.c;
    let width = dst.len() / c;
    if width < RUN || !std::arch::is_x86_feature_detected!("avx512f") {
        return 0;
    }
    // The kernel rows inside the image, and where their input row starts.
    let mut inside = [(0, 0); K];
    let mut count = 0;
    for ky in 0..K {
        if let Some(iy) = (oy * S + ky).checked_sub(g.top).filter(|&iy| iy < g.h) {
            inside[count] = ((iy % slots) * g.w * c, ky);
            count += 1;
        }
    }
    let mut ch = 0;
    while ch + LANES <= c {
        let mut kernel_rows = [KernelRow {
            input: &[],
            taps: &[],
        }; K];
        for (row, &(start, ky)) in kernel_rows.iter_mut().zip(&inside[..count]) {
            *row = KernelRow {
                input: &rows[start + ch..],
                taps: &w[ky * K * c + ch..],
            };
        }
        let kernel_rows = &kernel_rows[..count];
        for ox0 in (0..width).step_by(RUN).map(|ox| ox.min(width - RUN)) {
            let first = (ox0 * S) as isize - g.left as isize;
            let span = Span {
                c,
                width: g.w,
                first,
            };
            let (bias, out, relu6) = (&bias[ch..], &mut dst[ox0 * c + ch..], g.relu6);
            // The run's inputs that lie inside the row.
            let lo = first.min(0).unsigned_abs();
            let hi = (g.w as isize - first).clamp(0, X as isize) as usize;
            // SAFETY: AVX-512F is there (checked above).
            #[allow(unsafe_code)]
            unsafe {
                match (lo, hi) {
                    (0, h) if h == X => {
                        avx512::run::<K, S, 0, X, false>(kernel_rows, span, bias, out, relu6)
                    }
                    (1, h) if h == X => {
                        avx512::run::<K, S, 1, X, false>(kernel_rows, span, bias, out, relu6)
                    }
                    (2, h) if h == X => {
                        avx512::run::<K, S, 2, X, false>(kernel_rows, span, bias, out, relu6)
                    }
                    (0, h) if h == XR => {
                        avx512::run::<K, S, 0, XR, false>(kernel_rows, span, bias, out, relu6)
                    }
                    _ => avx512::run::<K, S, 0, X, true>(kernel_rows, span, bias, out, relu6),
                }
            }
        }
        ch += LANES;
    }
    ch
}

/// `N` channels from `ch` of `P` output pixels, `step` apart in the input,
/// that share one tap list; returns `P`. The sums are a value, indexed
/// only by constants once the loops unroll, so they stay in registers
/// (a slice copied into them, or out of them, put them on the stack and
/// stored them at every tap).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pixels<const N: usize, const P: usize>(
    out: &mut [f32],
    image: &[f32],
    w: &[f32],
    bias: &[f32],
    taps: &[(usize, usize)],
    (ch, c): (usize, usize),
    step: usize,
    relu6: bool,
) -> usize {
    let mut acc = [block::<N>(bias, ch); P];
    for &(input, kernel) in taps {
        let k = block::<N>(w, kernel + ch);
        for (p, sum) in acc.iter_mut().enumerate() {
            let x = &image[input + ch + p * step..][..N];
            for l in 0..N {
                sum[l] = x[l].mul_add(k[l], sum[l]);
            }
        }
    }
    for (p, sum) in acc.iter_mut().enumerate() {
        if relu6 {
            for v in sum.iter_mut() {
                *v = v.clamp(0.0, 6.0);
            }
        }
        let px = &mut out[p * c + ch..][..N];
        for (o, v) in px.iter_mut().zip(sum.iter()) {
            *o = *v;
        }
    }
    P
}

/// One output row of an image `W` pixels wide, for a `K`×`K` kernel at
/// stride `S`, with AVX-512. Per block of 16 channels, each kernel row's
/// `W` input pixels are loaded into registers once and every output pixel
/// takes its taps from them; with the shape known when compiling, which
/// taps fall in the padding is settled then too, so what runs is the
/// multiply-adds alone, from registers. The general path spends most of a
/// 7-pixel row on edge pixels with tap lists of their own, one at a time:
/// ONNX Runtime ran the 7² layers twice as fast (BENCHMARKS.md). AVX2 has
/// too few registers for this and keeps the general path.
struct Narrow<'a> {
    rows: &'a [f32],
    slots: usize,
    w: &'a [f32],
    bias: &'a [f32],
    g: &'a Geometry,
    oy: usize,
}

impl Narrow<'_> {
    #[inline(always)]
    fn row<const W: usize, const K: usize, const S: usize>(&self, dst: &mut [f32]) {
        let g = self.g;
        // Kernel rows inside the image, and where their input row starts.
        let mut kernel_rows = [(0, 0); K];
        let mut count = 0;
        for ky in 0..K {
            if let Some(iy) = (self.oy * S + ky).checked_sub(g.top).filter(|&iy| iy < g.h) {
                kernel_rows[count] = (ky, (iy % self.slots) * W * g.c);
                count += 1;
            }
        }
        let kernel_rows = &kernel_rows[..count];
        let mut ch = 0;
        while ch + 16 <= g.c {
            self.block::<16, W, K, S>(dst, kernel_rows, ch);
            ch += 16;
        }
        while ch + 8 <= g.c {
            self.block::<8, W, K, S>(dst, kernel_rows, ch);
            ch += 8;
        }
        while ch < g.c {
            self.block::<1, W, K, S>(dst, kernel_rows, ch);
            ch += 1;
        }
    }

    /// Channels `ch..ch + N` of the row, in runs of 7 output pixels (every
    /// shape here has 7 or 14).
    #[inline(always)]
    fn block<const N: usize, const W: usize, const K: usize, const S: usize>(
        &self,
        dst: &mut [f32],
        kernel_rows: &[(usize, usize)],
        ch: usize,
    ) {
        self.run::<N, W, K, S, 0>(dst, kernel_rows, ch);
        if W.div_ceil(S) > RUN {
            self.run::<N, W, K, S, RUN>(dst, kernel_rows, ch);
        }
    }

    /// Output pixels `O0..O0 + RUN` of channels `ch..ch + N`. With 16
    /// channels the run's 7 sums, the input pixels its taps reach (11 at
    /// stride 1, the row's 14 at stride 2) and a tap fit AVX-512's 32
    /// registers; a whole 14-pixel row at stride 1 (14 + 14 + 1) ran slower
    /// than the general path.
    #[inline(always)]
    fn run<const N: usize, const W: usize, const K: usize, const S: usize, const O0: usize>(
        &self,
        dst: &mut [f32],
        kernel_rows: &[(usize, usize)],
        ch: usize,
    ) {
        let c = self.g.c;
        let left = same_padding(W, K, S).0;
        let mut acc = [block::<N>(self.bias, ch); RUN];
        for &(ky, row) in kernel_rows {
            // Pixels no tap of the run reaches are never used, and their
            // loads are dropped.
            let x: [[f32; N]; W] =
                std::array::from_fn(|ix| block::<N>(self.rows, row + ix * c + ch));
            for kx in 0..K {
                let tap = block::<N>(self.w, (ky * K + kx) * c + ch);
                for (p, sum) in acc.iter_mut().enumerate() {
                    let ix = ((O0 + p) * S + kx).checked_sub(left);
                    if let Some(x) = ix.and_then(|ix| x.get(ix)) {
                        for l in 0..N {
                            sum[l] = x[l].mul_add(tap[l], sum[l]);
                        }
                    }
                }
            }
        }
        for (p, sum) in acc.iter_mut().enumerate() {
            if self.g.relu6 {
                for v in sum.iter_mut() {
                    *v = v.clamp(0.0, 6.0);
                }
            }
            let px = &mut dst[(O0 + p) * c + ch..][..N];
            for (o, v) in px.iter_mut().zip(sum.iter()) {
                *o = *v;
            }
        }
    }
}

/// Output pixels per run of a narrow row.
const RUN: usize = 7;

/// `v[at..at + N]` as a value.
#[inline(always)]
fn block<const N: usize>(v: &[f32], at: usize) -> [f32; N] {
    *v[at..].first_chunk().expect("a whole block of channels")
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// candle's grouped convolution on the same numbers in NCHW.
    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, relu6: bool) -> Result<Tensor> {
        let (_, h, wd, c) = x.dims4()?;
        let k = w.dim(0)?;
        let (t, bo) = same_padding(h, k, stride);
        let (l, r) = same_padding(wd, k, stride);
        let y = x
            .permute((0, 3, 1, 2))?
            .pad_with_zeros(2, t, bo)?
            .pad_with_zeros(3, l, r)?
            .conv2d(
                &w.permute((2, 0, 1))?.unsqueeze(1)?.contiguous()?,
                0,
                stride,
                1,
                c,
            )?
            .permute((0, 2, 3, 1))?
            .broadcast_add(b)?;
        if relu6 { y.clamp(0f32, 6f32) } else { Ok(y) }
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
        for (h, w, c, k, s, relu6) in [
            (9, 7, 3, 3, 1, false),
            (9, 7, 5, 3, 2, true),
            (12, 12, 16, 5, 2, true),
            (5, 6, 24, 5, 1, false),
            // Several blocks of channels, with a remainder; rows with
            // interior pixels, and images narrower than the kernel.
            (6, 13, 72, 3, 1, true),
            (7, 11, 104, 5, 2, true),
            (6, 37, 16, 3, 1, true),
            (9, 23, 8, 3, 2, false),
            (4, 12, 8, 5, 1, true),
            (3, 2, 8, 3, 2, true),
            (2, 3, 4, 5, 1, true),
            // Interior pixels in groups (of 2 at 32 channels, of 8 at
            // 8), with the row's remainder one at a time.
            (5, 21, 32, 3, 1, true),
            (6, 43, 40, 3, 2, false),
            (5, 30, 48, 5, 1, true),
            // Runs of 7 output pixels with AVX-512 (rows at least that
            // wide): both strides and kernels, padding on each side, a
            // last run overlapping the one before, channels past the
            // blocks of 16.
            (8, 29, 33, 5, 2, true),
            (5, 16, 48, 5, 1, false),
            (7, 17, 16, 3, 2, true),
            (4, 8, 17, 3, 1, true),
            (5, 26, 32, 3, 2, false),
            (4, 30, 16, 5, 2, true),
            // One run that meets both edges (its taps checked one by one).
            (5, 13, 16, 3, 2, true),
            // Rows 7 and 14 pixels wide (their own path with AVX-512):
            // channels in blocks of 16, then 8, then one at a time.
            (7, 7, 40, 5, 1, true),
            (9, 7, 25, 3, 1, false),
            (14, 14, 56, 5, 2, true),
            (5, 14, 33, 3, 1, true),
            (14, 14, 16, 3, 2, false),
            (7, 14, 24, 5, 1, true),
        ] {
            let x = Tensor::randn(0f32, 2.0, (2, h, w, c), &dev)?;
            let kern = Tensor::randn(0f32, 1.0, (k, k, c), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, c, &dev)?;
            let ours = depthwise_nhwc(&x, &kern, &bias, s, relu6)?;
            let theirs = reference(&x, &kern, &bias, s, relu6)?;
            assert_eq!(ours.dims(), theirs.dims());
            let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff < 1e-4,
                "h={h} w={w} c={c} k={k} s={s}: max diff {diff}"
            );
        }
        Ok(())
    }
}
