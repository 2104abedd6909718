//! An inverted-residual block (MobileNetV2's MBConv without
//! squeeze-excitation: 1×1 expand + ReLU6, K×K depthwise + ReLU6, 1×1
//! project, and the input added back when the shapes allow) as one pass
//! over bands of output rows, on NHWC activations.
//!
//! Layer by layer, the expanded activations (up to six times the block's
//! width, 4.8 MB per 112² image in EfficientNet-Lite0's second block) go
//! out to memory after the expand and come back for the depthwise, then
//! again between the depthwise and the project: the early blocks were
//! bound by that traffic, not by arithmetic. Here each task expands only
//! the input rows its next band of output rows needs, into a buffer sized
//! to stay in L2, runs the depthwise on them and projects the band
//! straight away; only the block's narrow input and output ever reach
//! memory. The buffer is a ring of rows, so the input rows that the next
//! band's taps share with this one stay where they are and are not
//! expanded again.
//!
//! Tasks are whole images, or row ranges of them when the batch does not
//! divide evenly among the threads, so each thread works on its own rows.
//! Where ranges would be too short for their halo (small images at small
//! batches, `by_rows`), tasks take ranges of the expanded channels
//! instead: each expands the whole image into its channels, runs their
//! depthwise (which keeps channels apart) and their part of the project's
//! sums, and the parts are added up at the end. Each thread then waits
//! once per block, where the three layers one after another wait three
//! times.

use std::{ops::Range, sync::Arc};

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, bail};
use rayon::prelude::*;

use super::{
    depthwise::{Geometry, output_row, same_padding},
    gemm::{Epilogue, NR, Packed, Part},
    lines::Scratch,
    stem::{self, Stem},
    tasks_per_image,
};

/// Expanded input rows plus depthwise output rows that a band may hold:
/// half of a 512 KiB L2 (a quarter of a 1 MiB one), so the weights and the
/// band's input fit beside them. 512 KiB ran a fifth slower at batch 32
/// on a 512 KiB L2 (BENCHMARKS.md).
const BAND_BYTES: usize = 256 << 10;

/// The fewest output pixels a band holds: each band's expand and project
/// are GEMMs over its pixels, and a GEMM over a few rows wastes most of
/// its 6-row tiles (7² blocks at one row per band ran 0.8x layer by layer).
const BAND_PIXELS: usize = 64;

#[derive(Clone, Debug)]
pub struct InvertedResidual {
    /// 1×1 `in → mid` with ReLU6; none when the block does not expand.
    pub expand: Option<Arc<Packed>>,
    /// `[kernel, kernel, mid]`.
    pub depthwise: Vec<f32>,
    /// `[mid]`.
    pub depthwise_bias: Vec<f32>,
    pub kernel: usize,
    pub stride: usize,
    /// 1×1 `mid → out`, no activation.
    pub project: Arc<Packed>,
    /// Adds the input to the output (stride 1, `in == out`).
    pub residual: bool,
}

/// One image of the block's input.
#[derive(Clone, Copy)]
enum Image<'a> {
    /// `[h, w, in]` values.
    Values(&'a [f32]),
    /// u8 pixels, whose rows the stem computes as the block needs them
    /// (`StemBlock`).
    Stem(&'a Stem, &'a stem::Geometry, &'a [u8]),
}

/// Where a band's input rows come from.
enum Source {
    /// The block's input itself (no expand).
    Input,
    /// Rows computed as the bands reach them (expanded, or the stem's
    /// output), row `iy` in slot `iy % slots` of `ring`; those before
    /// `last` are done.
    Ring { ring: Scratch, last: usize },
}

impl InvertedResidual {
    fn mid(&self) -> usize {
        self.project.k()
    }

    /// Whether tasks take ranges of output rows (else ranges of channels)
    /// on a `[batch, height, width, ..]` input. A range of an image
    /// expands the rows its taps share with the range before it again.
    ///
    /// Within one thread's share of a batch (`InShare`) the other threads
    /// are busy with theirs, and a range is mostly run by the same thread
    /// as the one before it: the halo is then work added, and rows lose
    /// once it is a large share of a small image (EfficientNet-Lite0's 7²
    /// and 14² blocks at batch 1 ran 0.8x the layers one after another,
    /// BENCHMARKS.md). With the pool to itself (a batch of one image), the
    /// threads run the ranges side by side and the halo costs less than
    /// splitting the channels, which has every thread walk the whole
    /// image's expanded rows and adds up the parts at the end: 14² blocks
    /// with 5×5 taps ran 1.1-1.2x faster by rows, as long as each range
    /// holds a GEMM's worth of pixels (`BAND_PIXELS`).
    pub fn by_rows(&self, batch: usize, height: usize, width: usize, own_pool: bool) -> bool {
        let out_rows = height.div_ceil(self.stride);
        let splits = tasks_per_image(batch).min(out_rows);
        let halo_rows = (splits - 1) * self.kernel.saturating_sub(self.stride);
        if !own_pool {
            return halo_rows * 4 <= height;
        }
        let range_pixels = out_rows.div_ceil(splits) * width.div_ceil(self.stride);
        splits == 1 || (halo_rows * 2 <= height && range_pixels >= BAND_PIXELS)
    }

    /// Output rows `[o0, o0 + rows)` of one image into `dst`.
    fn rows(&self, image: Image<'_>, g: &Geometry, cin: usize, o0: usize, dst: &mut [f32]) {
        let (mid, cout) = (self.mid(), self.project.n());
        let (h, w, s, k) = (g.h, g.w, g.stride, g.k);
        let ow = w.div_ceil(s);
        let end = o0 + dst.len() / (ow * cout);
        // Input rows per band: `band · s + k − s`; depthwise output rows: `band`.
        let per_band = |band: usize| ((band * s + k) * w + band * ow) * mid * 4;
        let fits = (1..=end - o0)
            .take_while(|&b| b == 1 || per_band(b) <= BAND_BYTES)
            .last()
            .unwrap_or(1);
        let band = fits.max(BAND_PIXELS.div_ceil(ow)).min(end - o0);
        // Input rows a band's taps reach at most: row `iy` lives in slot
        // `iy % slots`, so the rows the next band shares with this one stay
        // where they are (moving them to the front was a memmove per band;
        // the model runs 3-6 % faster at batch 8 without it).
        let slots = (band - 1) * s + k;
        let mut source = match (&self.expand, image) {
            (None, Image::Values(_)) => Source::Input,
            _ => Source::Ring {
                ring: Scratch::take(slots * w * mid),
                last: 0,
            },
        };
        let mut depthwise = Scratch::take(band * ow * mid);
        for b0 in (o0..end).step_by(band) {
            let b1 = (b0 + band).min(end);
            // The input rows this band's taps reach.
            let lo = (b0 * s).saturating_sub(g.top).min(h);
            let hi = ((b1 - 1) * s + k).saturating_sub(g.top).min(h);
            let (input, slots) = match (&mut source, image) {
                (Source::Input, Image::Values(image)) => (image, h),
                (Source::Ring { ring, last }, _) => {
                    let row = w * mid;
                    // Compute the rows the last band did not, in runs that
                    // stop where the ring wraps.
                    let mut iy = lo.max(*last);
                    while iy < hi {
                        let slot = iy % slots;
                        let run = (hi - iy).min(slots - slot);
                        let into = &mut ring[slot * row..(slot + run) * row];
                        match (&self.expand, image) {
                            (Some(expand), Image::Values(image)) => expand.forward_into(
                                &image[iy * w * cin..(iy + run) * w * cin],
                                into,
                                Epilogue::Relu6,
                            ),
                            (None, Image::Stem(stem, sg, pixels)) => {
                                stem.rows(pixels, sg, iy, into)
                            }
                            _ => unreachable!("`StemBlock::new` takes blocks without expand"),
                        }
                        iy += run;
                    }
                    *last = hi;
                    (&ring[..], slots)
                }
                (Source::Input, Image::Stem(..)) => unreachable!("a stem's rows go to a ring"),
            };
            let depthwise = &mut depthwise[..(b1 - b0) * ow * mid];
            for (oy, out) in (b0..b1).zip(depthwise.chunks_exact_mut(ow * mid)) {
                output_row(
                    out,
                    input,
                    slots,
                    &self.depthwise,
                    &self.depthwise_bias,
                    g,
                    oy,
                );
            }
            let out = &mut dst[(b0 - o0) * ow * cout..(b1 - o0) * ow * cout];
            self.project
                .forward_into(depthwise, out, Epilogue::Identity);
            if let (true, Image::Values(image)) = (self.residual, image) {
                let input = &image[b0 * w * cin..b1 * w * cin];
                out.iter_mut().zip(input).for_each(|(y, x)| *y += x);
            }
        }
    }

    /// The share of one image's output sums that the expanded channels
    /// under `panels` (of 32) make, from the project's bias for the first
    /// share, into `dst` (`[oh·ow, out]`).
    fn channels(
        &self,
        image: &[f32],
        g: &Geometry,
        cin: usize,
        panels: Range<usize>,
        dst: &mut [f32],
    ) {
        let mid = self.mid();
        let channels = panels.start * NR..(panels.end * NR).min(mid);
        let cw = channels.len();
        let pixels = g.h * g.w;
        let mut expanded = Scratch::take(pixels * cw);
        match &self.expand {
            Some(expand) => {
                let part = Part {
                    panels: panels.clone(),
                    inputs: 0..cin,
                    bias: true,
                };
                expand.part_into(image, part, &mut expanded, Epilogue::Relu6);
            }
            None => {
                for (dst, px) in expanded.chunks_exact_mut(cw).zip(image.chunks_exact(cin)) {
                    dst.copy_from_slice(&px[channels.clone()]);
                }
            }
        }
        // The depthwise weights and bias of these channels, laid out as
        // for a layer of `cw` channels.
        let mut weights = Vec::with_capacity(self.depthwise.len() / mid * cw);
        for tap in self.depthwise.chunks_exact(mid) {
            weights.extend_from_slice(&tap[channels.clone()]);
        }
        let share = Geometry { c: cw, ..*g };
        let (oh, ow) = (g.h.div_ceil(g.stride), g.w.div_ceil(g.stride));
        let mut depthwise = Scratch::take(oh * ow * cw);
        for (oy, out) in depthwise.chunks_exact_mut(ow * cw).enumerate() {
            output_row(
                out,
                &expanded,
                g.h,
                &weights,
                &self.depthwise_bias[channels.clone()],
                &share,
                oy,
            );
        }
        let part = Part {
            panels: 0..self.project.panels(),
            bias: channels.start == 0,
            inputs: channels,
        };
        self.project
            .part_into(&depthwise, part, dst, Epilogue::Identity);
    }
}

/// The block run within one thread's share of a batch while the other
/// threads run theirs (`EfficientNetLite::embed`), where it splits its
/// images as `InvertedResidual::by_rows` says for that case. The block by
/// itself has the pool to itself.
pub struct InShare<'a>(pub &'a InvertedResidual);

impl CustomOp1 for InvertedResidual {
    fn name(&self) -> &'static str {
        "inverted-residual"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward_cpu(xs, xl, true)
    }
}

impl CustomOp1 for InShare<'_> {
    fn name(&self) -> &'static str {
        "inverted-residual"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        self.0.forward_cpu(xs, xl, false)
    }
}

impl InvertedResidual {
    /// `x`: `[B, H, W, in]` → `[B, ceil(H/s), ceil(W/s), out]`.
    fn forward_cpu(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        own_pool: bool,
    ) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = xs else {
            bail!("inverted-residual supports f32 only");
        };
        let Some((x0, x1)) = xl.contiguous_offsets() else {
            bail!("inverted-residual needs a contiguous input");
        };
        let &[batch, h, w, cin] = xl.dims() else {
            bail!("inverted-residual input must be 4-D, got {:?}", xl.dims());
        };
        let (mid, cout, k, s) = (self.mid(), self.project.n(), self.kernel, self.stride);
        let expected_in = self.expand.as_ref().map_or(mid, |e| e.k());
        if cin != expected_in || self.expand.as_ref().is_some_and(|e| e.n() != mid) {
            bail!("inverted-residual takes {expected_in} channels, got {cin}");
        }
        if self.residual && (s != 1 || cin != cout) {
            bail!("inverted-residual: a residual needs stride 1 and {cin} == {cout}");
        }
        let x = &x[x0..x1];
        let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
        let g = Geometry {
            h,
            w,
            c: mid,
            k,
            stride: s,
            top: same_padding(h, k, s).0,
            left: same_padding(w, k, s).0,
            relu6: true,
        };
        let mut y = super::output(batch, batch * oh * ow * cout);
        let shape = Shape::from((batch, oh, ow, cout));
        if y.is_empty() {
            return Ok((CpuStorage::F32(y), shape));
        }
        if !self.by_rows(batch, h, w, own_pool) {
            let panels = mid.div_ceil(NR);
            let shares = tasks_per_image(batch).min(panels);
            let image = |b: usize| &x[b * h * w * cin..][..h * w * cin];
            let parts: Vec<Vec<f32>> = (0..batch * shares)
                .into_par_iter()
                .map(|task| {
                    let (b, t) = (task / shares, task % shares);
                    let mut part = vec![0f32; oh * ow * cout];
                    let share = t * panels / shares..(t + 1) * panels / shares;
                    self.channels(image(b), &g, cin, share, &mut part);
                    part
                })
                .collect();
            for ((b, out), parts) in y
                .chunks_exact_mut(oh * ow * cout)
                .enumerate()
                .zip(parts.chunks_exact(shares))
            {
                out.copy_from_slice(&parts[0]);
                for part in &parts[1..] {
                    out.iter_mut().zip(part).for_each(|(y, p)| *y += p);
                }
                if self.residual {
                    out.iter_mut().zip(image(b)).for_each(|(y, x)| *y += x);
                }
            }
        } else {
            let rows = oh.div_ceil(tasks_per_image(batch).min(oh));
            y.par_chunks_mut(oh * ow * cout)
                .zip(x.par_chunks(h * w * cin))
                .flat_map(|(out, image)| {
                    out.par_chunks_mut(rows * ow * cout)
                        .enumerate()
                        .map(move |(i, out)| (image, i * rows, out))
                })
                .for_each(|(image, o0, out)| self.rows(Image::Values(image), &g, cin, o0, out));
        }
        Ok((CpuStorage::F32(y), shape))
    }
}

/// A network's stem and its first block as one pass by bands of rows
/// (EfficientNet-Lite0's 3×3 convolution over the pixels, then a block
/// without expand). As two ops, the stem wrote its output whole, 1.6 MB
/// per 224² image, and the block read it back from beyond L2; here the
/// stem computes the rows each band of the block reaches into the
/// block's ring, where the expand would. Tasks are ranges of rows: the
/// stem's output has 112 of them.
#[derive(Clone, Debug)]
pub struct StemBlock {
    stem: Stem,
    block: InvertedResidual,
}

impl StemBlock {
    /// `None` where the block expands, or does not take the stem's output.
    pub fn new(stem: Stem, block: InvertedResidual) -> Option<Self> {
        let fits = block.expand.is_none() && !block.residual && block.mid() == stem.patches.n();
        fits.then_some(Self { stem, block })
    }
}

impl CustomOp1 for StemBlock {
    fn name(&self) -> &'static str {
        "stem-block"
    }

    /// `x`: u8 `[B, H, W, C]` → f32 `[B, oh, ow, out]`.
    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::U8(x) = xs else {
            bail!("stem-block takes u8 pixels");
        };
        let Some((x0, x1)) = xl.contiguous_offsets() else {
            bail!("stem-block needs a contiguous input");
        };
        let &[batch, h, w, c] = xl.dims() else {
            bail!("stem-block input must be 4-D, got {:?}", xl.dims());
        };
        let sg = self.stem.geometry(h, w, c)?;
        let block = &self.block;
        let (mid, cout, k, s) = (block.mid(), block.project.n(), block.kernel, block.stride);
        let (sh, sw) = (sg.oh, sg.ow);
        let (oh, ow) = (sh.div_ceil(s), sw.div_ceil(s));
        let g = Geometry {
            h: sh,
            w: sw,
            c: mid,
            k,
            stride: s,
            top: same_padding(sh, k, s).0,
            left: same_padding(sw, k, s).0,
            relu6: true,
        };
        let x = &x[x0..x1];
        let mut y = super::output(batch, batch * oh * ow * cout);
        let shape = Shape::from((batch, oh, ow, cout));
        if !y.is_empty() {
            let rows = oh.div_ceil(tasks_per_image(batch).min(oh));
            y.par_chunks_mut(oh * ow * cout)
                .zip(x.par_chunks(h * w * c))
                .flat_map(|(out, pixels)| {
                    out.par_chunks_mut(rows * ow * cout)
                        .enumerate()
                        .map(move |(i, out)| (pixels, i * rows, out))
                })
                .for_each(|(pixels, o0, out)| {
                    let image = Image::Stem(&self.stem, &sg, pixels);
                    block.rows(image, &g, mid, o0, out);
                });
        }
        Ok((CpuStorage::F32(y), shape))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Module, Tensor};

    use super::*;
    use crate::models::kernels::{
        depthwise::depthwise_nhwc,
        linear::{Activation, Linear},
    };

    /// The three layers one after another, as separate ops.
    fn layer_by_layer(
        x: &Tensor,
        expand: Option<(&Tensor, &Tensor)>,
        dw: (&Tensor, &Tensor),
        project: (&Tensor, &Tensor),
        stride: usize,
        residual: bool,
    ) -> Result<Tensor> {
        let h = match expand {
            Some((w, b)) => Linear::new(w.clone(), b.clone(), Activation::Relu6)?.forward(x)?,
            None => x.clone(),
        };
        let h = depthwise_nhwc(&h, dw.0, dw.1, stride, true)?;
        let y =
            Linear::new(project.0.clone(), project.1.clone(), Activation::Identity)?.forward(&h)?;
        if residual { y + x } else { Ok(y) }
    }

    #[test]
    fn stem_and_block_in_one_pass_match_them_one_after_another() -> Result<()> {
        let dev = Device::Cpu;
        // EfficientNet-Lite0's shape (bands through a ring that wraps, two
        // threads splitting an image), odd sizes, a 5×5 block at stride 2,
        // batches that split images and that do not.
        for (batch, h, w, mid, cout, k, s) in [
            (2, 224, 224, 32, 16, 3, 1),
            (1, 31, 26, 8, 4, 3, 1),
            (3, 17, 17, 16, 24, 5, 2),
        ] {
            let pixels: Vec<u8> = (0..batch * h * w * 3)
                .map(|i| (i * 37 % 256) as u8)
                .collect();
            let x = Tensor::from_vec(pixels, (batch, h, w, 3), &dev)?;
            let stem_weight = Tensor::randn(0f32, 0.3, (mid, 27), &dev)?;
            let stem_bias = Tensor::randn(0f32, 0.3, mid, &dev)?;
            let stem = Stem {
                patches: Linear::new(stem_weight, stem_bias, Activation::Relu6)?
                    .packed()
                    .cloned()
                    .expect("packed on the CPU"),
                kernel: 3,
                stride: 2,
                scale: 1.0 / 128.0,
                shift: -1.0,
                epilogue: Epilogue::Relu6,
            };
            let pw = Tensor::randn(0f32, 0.3, (cout, mid), &dev)?;
            let block = InvertedResidual {
                expand: None,
                depthwise: Tensor::randn(0f32, 0.3, (k, k, mid), &dev)?
                    .flatten_all()?
                    .to_vec1()?,
                depthwise_bias: Tensor::randn(0f32, 0.3, mid, &dev)?.to_vec1()?,
                kernel: k,
                stride: s,
                project: Arc::new(Packed::new(
                    &pw.flatten_all()?.to_vec1()?,
                    &Tensor::randn(0f32, 0.3, cout, &dev)?.to_vec1()?,
                    cout,
                    mid,
                )),
                residual: false,
            };
            let both = StemBlock::new(stem.clone(), block.clone()).expect("a block without expand");
            for threads in 1..=3 {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a thread pool");
                let (got, want) = pool.install(|| -> Result<(Tensor, Tensor)> {
                    let want = x.apply_op1_no_bwd(&stem)?.apply_op1_no_bwd(&block)?;
                    Ok((x.apply_op1_no_bwd(&both)?, want))
                })?;
                assert_eq!(got.dims(), want.dims());
                let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(
                    diff < 1e-5,
                    "{batch}x{h}x{w}, mid {mid}, out {cout}, k {k}, s {s}, {threads} threads: {diff}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn matches_the_layers_one_by_one() -> Result<()> {
        let dev = Device::Cpu;
        // Batches below and above the task split, strides 1 and 2, odd
        // sizes, no expand, bands of one row (wide) and many (narrow).
        for (batch, h, w, cin, expand, cout, k, s) in [
            (1, 9, 7, 4, 3, 4, 3, 1),
            (2, 12, 12, 8, 6, 16, 5, 2),
            (5, 5, 6, 6, 1, 6, 3, 1),
            (1, 13, 11, 8, 6, 8, 5, 1),
            (3, 112, 112, 16, 6, 24, 3, 2),
            (1, 7, 7, 16, 72, 8, 5, 1),
            // Bands of 6 rows through a ring of 10, so runs of expanded
            // rows wrap; whole images and a task starting mid-image.
            (2, 40, 40, 16, 6, 16, 5, 1),
            (1, 40, 40, 16, 6, 16, 5, 1),
            // Small images, split by channels on 2 or 3 threads: a
            // residual, stride 2, a last share of partial panels, no
            // expand (the input's channels copied).
            (1, 7, 7, 40, 6, 40, 5, 1),
            (1, 9, 9, 16, 6, 24, 5, 2),
            (2, 7, 7, 72, 1, 24, 5, 1),
            // By rows with the pool to itself, by channels within a share
            // (EfficientNet-Lite0's 14² blocks with 5×5 taps).
            (1, 14, 14, 16, 6, 24, 5, 1),
            // Rows 14 pixels wide (the depthwise's own path with AVX-512)
            // through a ring that wraps, at strides 1 and 2.
            (1, 40, 14, 16, 6, 16, 5, 1),
            (2, 28, 14, 24, 6, 40, 3, 2),
        ] {
            let mid = cin * expand;
            let x = Tensor::randn(0f32, 1.0, (batch, h, w, cin), &dev)?;
            let ew = Tensor::randn(0f32, 0.3, (mid, cin), &dev)?;
            let eb = Tensor::randn(0f32, 0.3, mid, &dev)?;
            let dw = Tensor::randn(0f32, 0.3, (k, k, mid), &dev)?;
            let db = Tensor::randn(0f32, 0.3, mid, &dev)?;
            let pw = Tensor::randn(0f32, 0.3, (cout, mid), &dev)?;
            let pb = Tensor::randn(0f32, 0.3, cout, &dev)?;
            let residual = s == 1 && cin == cout;
            let expand = (expand != 1).then_some((&ew, &eb));
            let want = layer_by_layer(&x, expand, (&dw, &db), (&pw, &pb), s, residual)?;
            let packed = |w: &Tensor, b: &Tensor| -> Result<Arc<Packed>> {
                let (n, k) = w.dims2()?;
                Ok(Arc::new(Packed::new(
                    &w.flatten_all()?.to_vec1()?,
                    &b.to_vec1()?,
                    n,
                    k,
                )))
            };
            let block = InvertedResidual {
                expand: expand.map(|(w, b)| packed(w, b)).transpose()?,
                depthwise: dw.flatten_all()?.to_vec1()?,
                depthwise_bias: db.to_vec1()?,
                kernel: k,
                stride: s,
                project: packed(&pw, &pb)?,
                residual,
            };
            // One thread takes rows; more take channels where an image's
            // rows are too few to share, which depends on whether the
            // block has the pool to itself.
            for threads in 1..=3 {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a thread pool");
                for own_pool in [true, false] {
                    let got = pool.install(|| match own_pool {
                        true => x.apply_op1_no_bwd(&block),
                        false => x.apply_op1_no_bwd(&InShare(&block)),
                    })?;
                    assert_eq!(got.dims(), want.dims());
                    let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(
                        diff < 1e-4,
                        "{batch}x{h}x{w}x{cin}, mid {mid}, out {cout}, k {k}, s {s}, \
                         {threads} threads, own pool {own_pool}: {diff}"
                    );
                }
            }
        }
        Ok(())
    }
}
