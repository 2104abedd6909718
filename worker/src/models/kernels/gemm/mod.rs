//! `y = act(x · Wᵀ + b)` on the CPU with the weights packed once, at load.
//!
//! candle's matmul (the `gemm` crate) packs both operands on every call,
//! and the bias and activation were a second pass over the output. Here
//! `W` is packed when the layer is built, into panels of 32 output columns
//! laid out k-major. A tile of `y` is 6 rows by two vector registers: 6×32
//! with AVX-512 (12 zmm accumulators fed by two loads and six broadcasts
//! per k), 6×16 with AVX2, which walks a panel in two halves (6×8 for a
//! last 8 columns). `x` is read in place (rows are contiguous in `k`); a
//! tile's sums start from the bias, and the activation is applied to the
//! tile before it is stored. K is split into blocks of `KC` so that a
//! tile's rows of `x` stay in L1 and the panels a task walks stay in L2;
//! threads take chunks of whole tiles of rows.
//!
//! The tile is compiled for AVX-512 and AVX2 + FMA besides the baseline
//! x86-64 and picked at run time (`multiversion`); it is plain Rust that
//! the compiler vectorises.
//!
//! With `Products::Bf16` the weights and inputs are rounded to bf16 and
//! multiplied in pairs (`vdpbf16ps` where the CPU has AVX-512 BF16: twice
//! the multiply-adds of an f32 FMA per instruction, half the weight bytes),
//! summed in f32. Each f32 slot of the panels and of the inputs then holds
//! the bits of two bf16 values, consecutive in `k`, so that the blocking,
//! threading and tiles below walk half as many rows of the same layout.
//! Where the CPU has AMX (and Linux grants it), the same layout feeds AMX
//! tiles instead (`amx.rs`), 16×16 sums per instruction. The kernel is
//! chosen once per process (`bf16_kernel`).

use std::ops::Range;

use multiversion::{multiversion, target::target_cfg_f};
use rayon::prelude::*;

use super::lines::{LINE, Lines};

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod amx;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod dpbf16;

/// Rows of a tile.
const MR: usize = 6;
/// Columns of a packed panel: the widest tile.
pub(super) const NR: usize = 32;
/// K per block.
const KC: usize = 256;
/// Columns per block: 8 KC-deep panels of 32 are 256 KiB.
const NC: usize = 256;
/// Rows of a panel ahead of the tile's step that are asked into L1.
const PREFETCH: usize = 16;
/// Tasks per thread where rows are shared out, for balance.
const TASKS_PER_THREAD: usize = 4;
/// Tiles of rows a task takes at least, or the threads share columns.
const MIN_TILES: usize = 4;

/// What the GEMM multiplies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Products {
    /// f32 weights by f32 inputs.
    #[default]
    F32,
    /// Weights and inputs rounded to bf16 (to nearest, ties to even), the
    /// products summed in f32.
    Bf16,
}

/// Applied to each output value after the bias.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue {
    Identity,
    Relu6,
    /// Any other activation, applied in place to each finished tile row.
    Apply(fn(&mut [f32])),
}

/// What one call computes: the output columns under `panels`, summed over
/// the inputs (rows of `W`'s K) in `inputs` only, from the bias or from 0.
/// A thread that owns some of a layer's input channels computes its
/// share of the next layer's sums this way (`kernels/mbconv.rs`).
#[derive(Clone, Debug)]
pub struct Part {
    pub panels: Range<usize>,
    pub inputs: Range<usize>,
    pub bias: bool,
}

/// `W` `[n, k]` packed into `ceil(n / 32)` panels of `[k][32]`, zero-padded,
/// and the bias padded to match.
///
/// The panels start on a cache line, so that each row of 32 weights is
/// two whole lines (`Lines`): the model ran 1.05x faster at batch 8 on a
/// Xeon with AVX-512 than with rows that straddled three.
///
/// With bf16 products a panel is `[ceil(k / 2)][32]`, each slot the pair
/// of weights `k = 2i` (low half) and `2i + 1` of its column; for AMX
/// tiles, with zero rows to a multiple of 16.
#[derive(Debug)]
pub struct Packed {
    n: usize,
    k: usize,
    /// How bf16 products run; `None` for f32 products.
    bf16: Option<Bf16Kernel>,
    panels: Lines,
    bias: Vec<f32>,
}

impl Packed {
    /// `weight`: `[n, k]` row-major; `bias`: `[n]`.
    pub fn new(weight: &[f32], bias: &[f32], n: usize, k: usize) -> Self {
        Self::with_products(weight, bias, n, k, Products::F32)
    }

    /// As `new`, multiplying as `products` says.
    pub fn with_products(
        weight: &[f32],
        bias: &[f32],
        n: usize,
        k: usize,
        products: Products,
    ) -> Self {
        assert_eq!(weight.len(), n * k, "weight is not [n, k]");
        match products {
            Products::F32 => Self::pack(bias, n, k, |p, panel| {
                for j in 0..NR.min(n - p * NR) {
                    let row = &weight[(p * NR + j) * k..][..k];
                    for (kk, &w) in row.iter().enumerate() {
                        panel[kk * NR + j] = w;
                    }
                }
            }),
            Products::Bf16 => Self::with_bf16_kernel(weight, bias, n, k, bf16_kernel()),
        }
    }

    /// As `with_products` for bf16 products, run by `kernel`, one of
    /// `bf16_kernels()` (for comparing them; `with_products` takes the
    /// fastest).
    pub fn with_bf16_kernel(
        weight: &[f32],
        bias: &[f32],
        n: usize,
        k: usize,
        kernel: Bf16Kernel,
    ) -> Self {
        assert_eq!(weight.len(), n * k, "weight is not [n, k]");
        assert!(
            bf16_kernels().contains(&kernel),
            "{kernel:?} does not run on this CPU"
        );
        Self::pack_pairs(bias, n, k, kernel, |p, panel| {
            for j in 0..NR.min(n - p * NR) {
                let row = &weight[(p * NR + j) * k..][..k];
                for (i, pair) in row.chunks(2).enumerate() {
                    panel[i * NR + j] = bf16_pair(pair);
                }
            }
        })
    }

    /// `weight`: `[k, n]` row-major, the transpose of `with_products`'
    /// (attention's values, which multiply the weights from the right);
    /// `bias`: `[n]`.
    pub fn from_k_major(
        weight: &[f32],
        bias: &[f32],
        n: usize,
        k: usize,
        products: Products,
    ) -> Self {
        assert_eq!(weight.len(), n * k, "weight is not [k, n]");
        match products {
            Products::F32 => Self::pack(bias, n, k, |p, panel| {
                let cols = NR.min(n - p * NR);
                for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                    row[..cols].copy_from_slice(&weight[kk * n + p * NR..][..cols]);
                }
            }),
            Products::Bf16 => Self::pack_pairs(bias, n, k, bf16_kernel(), |p, panel| {
                let cols = NR.min(n - p * NR);
                let pairs = panel.chunks_exact_mut(NR).take(k.div_ceil(2));
                for (i, row) in pairs.enumerate() {
                    let at = |kk: usize| weight.get(kk * n + p * NR..).unwrap_or_default();
                    let (even, odd) = (at(2 * i), at(2 * i + 1));
                    for (j, slot) in row[..cols].iter_mut().enumerate() {
                        *slot = bf16_pair(&[even[j], odd.get(j).copied().unwrap_or(0.0)]);
                    }
                }
            }),
        }
    }

    /// How it multiplies.
    pub fn products(&self) -> Products {
        match self.bf16 {
            None => Products::F32,
            Some(_) => Products::Bf16,
        }
    }

    /// Zeroed f32 panels, each filled by `fill(p, panel)`, and the bias
    /// padded.
    fn pack(bias: &[f32], n: usize, k: usize, fill: impl FnMut(usize, &mut [f32])) -> Self {
        Self::pack_rows(bias, n, k, None, fill)
    }

    /// Zeroed panels of bf16 pairs for `kernel`, each filled by `fill(p,
    /// panel)`.
    fn pack_pairs(
        bias: &[f32],
        n: usize,
        k: usize,
        kernel: Bf16Kernel,
        fill: impl FnMut(usize, &mut [f32]),
    ) -> Self {
        Self::pack_rows(bias, n, k, Some(kernel), fill)
    }

    /// Panels of `depth(k, bf16)` rows.
    fn pack_rows(
        bias: &[f32],
        n: usize,
        k: usize,
        bf16: Option<Bf16Kernel>,
        mut fill: impl FnMut(usize, &mut [f32]),
    ) -> Self {
        assert_eq!(bias.len(), n, "bias is not [n]");
        let depth = depth(k, bf16);
        let count = n.div_ceil(NR);
        // One row of slack after the last panel: a tile that starts at
        // column 16 views its K rows as whole chunks of NR from there.
        let mut panels = Lines::zeroed((count * depth + 1) * NR);
        for (p, panel) in panels.chunks_exact_mut(depth * NR).take(count).enumerate() {
            fill(p, panel);
        }
        let mut padded = vec![0f32; count * NR];
        padded[..n].copy_from_slice(bias);
        Self {
            n,
            k,
            bf16,
            panels,
            bias: padded,
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Rows of a panel.
    fn depth(&self) -> usize {
        depth(self.k, self.bf16)
    }

    /// `x` (`[m, k]`) as the tiles read it: itself, or rows of bf16 pairs
    /// (padded to whole AMX tiles for those).
    fn inputs<'x>(&self, x: &'x [f32]) -> std::borrow::Cow<'x, [f32]> {
        let m = x.len() / self.k.max(1);
        match self.bf16 {
            None => x.into(),
            Some(Bf16Kernel::Amx) => {
                round_rows(x, self.k, self.depth(), m.next_multiple_of(amx::TILE)).into()
            }
            Some(_) => round_rows(x, self.k, self.depth(), m).into(),
        }
    }

    /// Panels of 32 output columns.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Every column over every input, from the bias.
    fn whole(&self, panels: Range<usize>) -> Part {
        Part {
            panels,
            inputs: 0..self.depth(),
            bias: true,
        }
    }

    /// `x`: `[m, k]` row-major → `[m, n]`.
    ///
    /// Each task reads the weights of its columns once for all its rows,
    /// so tasks take rows while there are enough to share (a few tasks per
    /// thread, for balance, of whole tiles each), and otherwise columns:
    /// with EfficientNet's 7² layers at batch 1 (49 rows, 9 tiles) or
    /// BLIP's decoder (a row per image), chunks of one or two tiles read
    /// every weight once per chunk and could not be shared evenly.
    pub fn forward(&self, x: &[f32], m: usize, epilogue: Epilogue) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k, "input is not [m, k]");
        let mut y = vec![0f32; m * self.n];
        if m == 0 || self.n == 0 {
            return y;
        }
        let threads = rayon::current_num_threads().max(1);
        let (tiles, panels) = (m.div_ceil(MR), self.n.div_ceil(NR));
        let all = self.whole(0..panels);
        // Each task rounds its own rows to bf16 pairs, where it has any.
        if threads == 1 {
            rows(self, all, &self.inputs(x), &mut y, epilogue);
        } else if tiles >= threads * TASKS_PER_THREAD * MIN_TILES || panels < threads {
            let tasks = (threads * TASKS_PER_THREAD).min(tiles);
            let (mut x, mut out) = (x, &mut y[..]);
            let mut parts = Vec::with_capacity(tasks);
            for t in 0..tasks {
                // Tiles `[t·tiles/tasks, (t+1)·tiles/tasks)`: sizes differ
                // by one tile at most; the last ends at row `m`.
                let end = ((t + 1) * tiles / tasks * MR).min(m);
                let rows = end - (t * tiles / tasks * MR).min(m);
                let (xa, xb) = x.split_at(rows * self.k);
                let (ya, yb) = std::mem::take(&mut out).split_at_mut(rows * self.n);
                parts.push((xa, ya));
                (x, out) = (xb, yb);
            }
            parts
                .into_par_iter()
                .for_each(|(x, y)| rows(self, all.clone(), &self.inputs(x), y, epilogue));
        } else {
            let x = &*self.inputs(x);
            // Panels `[t·panels/threads, …)` per task, into a buffer of its
            // own, then copied into place.
            let parts: Vec<(usize, usize, Vec<f32>)> = (0..threads)
                .into_par_iter()
                .map(|t| {
                    let (p0, p1) = (t * panels / threads, (t + 1) * panels / threads);
                    let c0 = p0 * NR;
                    let width = (p1 * NR).min(self.n) - c0;
                    let mut part = vec![0f32; m * width];
                    rows(self, self.whole(p0..p1), x, &mut part, epilogue);
                    (c0, width, part)
                })
                .collect();
            for (c0, width, part) in parts {
                for (out, part) in y.chunks_exact_mut(self.n).zip(part.chunks_exact(width)) {
                    out[c0..c0 + width].copy_from_slice(part);
                }
            }
        }
        y
    }

    /// `x`: `[m, k]` → `y`: `[m, n]`, on the calling thread (for callers
    /// that split the work themselves).
    pub fn forward_into(&self, x: &[f32], y: &mut [f32], epilogue: Epilogue) {
        let m = x.len() / self.k.max(1);
        assert_eq!(x.len(), m * self.k, "input is not [m, k]");
        assert_eq!(y.len(), m * self.n, "output is not [m, n]");
        if m > 0 && self.n > 0 {
            let x = &*self.inputs(x);
            rows(self, self.whole(0..self.panels()), x, y, epilogue);
        }
    }

    /// `x`: `[m, part.inputs.len()]` → `y`: `[m, columns under
    /// part.panels]`, on the calling thread. f32 products only.
    pub fn part_into(&self, x: &[f32], part: Part, y: &mut [f32], epilogue: Epilogue) {
        assert_eq!(self.bf16, None, "parts of bf16 products");
        let (k, panels) = (part.inputs.len(), part.panels.clone());
        assert!(part.inputs.end <= self.k && panels.end <= self.panels());
        let n = (panels.end * NR)
            .min(self.n)
            .saturating_sub(panels.start * NR);
        let m = x.len() / k.max(1);
        assert_eq!(x.len(), m * k, "input is not [m, inputs]");
        assert_eq!(y.len(), m * n, "output is not [m, columns]");
        if m > 0 && n > 0 {
            rows(self, part, x, y, epilogue);
        }
    }
}

/// `x`: some rows of the input (the inputs under `part.inputs`, as
/// `Packed::inputs` gives them); `y`: the same rows of the output's columns
/// under `part.panels`, side by side.
fn rows(packed: &Packed, part: Part, x: &[f32], y: &mut [f32], epilogue: Epilogue) {
    match packed.bf16 {
        None => rows_f32(packed, part, x, y, epilogue),
        Some(Bf16Kernel::Widened) => rows_widened(packed, part, x, y, epilogue),
        // SAFETY: a `Packed`'s kernel is one of `bf16_kernels()`, which
        // found what each needs on this CPU and in this process
        // (`with_bf16_kernel` asserts it; the others take `bf16_kernel()`).
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        Some(Bf16Kernel::Dpbf16) => unsafe { dpbf16::rows(packed, part, x, y, epilogue) },
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        Some(Bf16Kernel::Amx) => unsafe { amx::rows(packed, part, x, y, epilogue) },
        #[cfg(not(target_arch = "x86_64"))]
        Some(_) => unreachable!("x86-64 kernels are only chosen there"),
    }
}

/// Rows of a panel of `k` inputs: `k`, or its pairs for bf16 products,
/// padded to whole tiles for AMX.
fn depth(k: usize, bf16: Option<Bf16Kernel>) -> usize {
    match bf16 {
        None => k,
        Some(Bf16Kernel::Amx) => k.div_ceil(2).next_multiple_of(amx::TILE),
        Some(_) => k.div_ceil(2),
    }
}

/// How bf16 products run on a CPU, fastest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AMX tiles' `tdpbf16ps` (Intel Xeon from Sapphire Rapids on).
    Amx,
    /// AVX-512 BF16's `vdpbf16ps`.
    Dpbf16,
    /// Each pair widened to f32 and multiplied by FMAs, as `vdpbf16ps`
    /// does: about f32's speed.
    Widened,
}

/// The fastest way this CPU (and OS) runs bf16 products.
pub fn bf16_kernel() -> Bf16Kernel {
    bf16_kernels()[0]
}

/// The ways this CPU (and OS) can run bf16 products, fastest first, found
/// once.
pub fn bf16_kernels() -> &'static [Bf16Kernel] {
    static KERNELS: std::sync::OnceLock<Vec<Bf16Kernel>> = std::sync::OnceLock::new();
    KERNELS.get_or_init(|| {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if amx::available() {
                kernels.push(Bf16Kernel::Amx);
            }
            if std::arch::is_x86_feature_detected!("avx512bf16")
                && std::arch::is_x86_feature_detected!("avx512f")
            {
                kernels.push(Bf16Kernel::Dpbf16);
            }
        }
        kernels.push(Bf16Kernel::Widened);
        kernels
    })
}

/// One compiled version per target, with the tiles inlined into it.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn rows_f32(packed: &Packed, part: Part, x: &[f32], y: &mut [f32], epilogue: Epilogue) {
    // A tile row is two vector registers, so the 12 sums fill 12 of
    // AVX-512's 32 registers or 12 of AVX2's 16. Two 512-bit FMA pipes
    // (Zen 5, recent Xeons) need 8 or more independent sums in flight to
    // stay busy: a 6×16 tile there is 6 single-register rows. On Zen 5 the
    // 6×32 tile runs the model's GEMMs 1.35-1.4x faster on one thread
    // (234 GFLOP/s of a 255 peak).
    if target_cfg_f!(target_feature = "avx512f") {
        rows_of::<NR, F32s>(packed, part, x, y, epilogue);
    } else {
        rows_of::<{ NR / 2 }, F32s>(packed, part, x, y, epilogue);
    }
}

/// bf16 products on CPUs without AVX-512 BF16: each pair widened to f32.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn rows_widened(packed: &Packed, part: Part, x: &[f32], y: &mut [f32], epilogue: Epilogue) {
    if target_cfg_f!(target_feature = "avx512f") {
        rows_of::<NR, Widened>(packed, part, x, y, epilogue);
    } else {
        rows_of::<{ NR / 2 }, Widened>(packed, part, x, y, epilogue);
    }
}

/// `rows` with tiles `W` columns wide, multiplied by `P`.
#[inline(always)]
fn rows_of<const W: usize, P: Multiply>(
    packed: &Packed,
    Part {
        panels,
        inputs,
        bias,
    }: Part,
    x: &[f32],
    y: &mut [f32],
    epilogue: Epilogue,
) {
    let k = inputs.len();
    // The output's row: the panels' columns.
    let first = panels.start * NR;
    let n = (panels.end * NR).min(packed.n) - first;
    let m = y.len() / n;
    // K blocks keep a block of panels in L2 for every tile of rows. One
    // tile (a classifier at batch 1, a decoder step) uses each weight once,
    // so it walks whole panels instead: the weights are then one stream
    // through memory, which the prefetcher follows, where K blocks made a
    // stream of 32 KiB per panel and block.
    let kb = if m <= MR { k.max(1) } else { KC };
    for k0 in (0..k).step_by(kb) {
        let kc = kb.min(k - k0);
        let step = Step {
            first: k0 == 0,
            last: k0 + kc == k,
            epilogue,
        };
        // Weights' row of this block's first input.
        let kw = inputs.start + k0;
        for p0 in panels.clone().step_by(NC / NR) {
            for r0 in (0..m).step_by(MR) {
                let valid = MR.min(m - r0);
                // Missing rows of a last, partial tile repeat its last
                // row; their results are dropped.
                let a: [&[f32]; MR] =
                    std::array::from_fn(|r| &x[(r0 + r.min(valid - 1)) * k + k0..][..kc]);
                for p in p0..(p0 + NC / NR).min(panels.end) {
                    let cols = NR.min(packed.n - p * NR);
                    let block = &packed.panels[(p * packed.depth() + kw) * NR..];
                    for c0 in (0..cols).step_by(W) {
                        // Chunk `kk` starts at column `c0` of the panel's
                        // row `kk`; the tile reads its first `w` values.
                        let (b, _) = block[c0..][..kc * NR].as_chunks::<NR>();
                        let bias = if bias {
                            &packed.bias[p * NR + c0..]
                        } else {
                            &[0f32; NR][..]
                        };
                        let y = &mut y[r0 * n + p * NR - first + c0..];
                        // The last 24, 16 or 8 columns of a layer (of 24,
                        // 40, 80, 112 … outputs) need fewer multiply-adds.
                        // Tiles are whole columns, so every row copies
                        // with a constant length, which compiles to
                        // vector moves (a length only known at run time
                        // is a call to memmove: 4 % of the model's time).
                        // Other widths (none in the models here) go
                        // through a whole tile on the side.
                        match (cols - c0).min(W) {
                            w if w == W => tile::<W, P>(&a, b, bias, y, n, valid, step),
                            24 => tile::<24, P>(&a, b, bias, y, n, valid, step),
                            16 => tile::<16, P>(&a, b, bias, y, n, valid, step),
                            8 => tile::<8, P>(&a, b, bias, y, n, valid, step),
                            w => {
                                let mut side = [[0f32; W]; MR];
                                for (r, row) in side.iter_mut().enumerate().take(valid) {
                                    row[..w].copy_from_slice(&y[r * n..][..w]);
                                }
                                let flat = side.as_flattened_mut();
                                tile::<W, P>(&a, b, bias, flat, W, valid, step);
                                for (r, row) in side.iter().enumerate().take(valid) {
                                    y[r * n..][..w].copy_from_slice(&row[..w]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Where a K block sits in the product, and what follows the last.
#[derive(Clone, Copy)]
struct Step {
    first: bool,
    last: bool,
    epilogue: Epilogue,
}

/// One MR×C tile of `y` (rows `n` apart, `valid` rows of it kept) `+= a ·
/// b` over a K block, where `a` holds MR rows of `kc` inputs and `b` a
/// panel's `kc` rows of weights from the tile's first column, of which the
/// first C are used; the first block starts from the bias, the activation
/// follows the last.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<const C: usize, P: Multiply>(
    a: &[&[f32]; MR],
    b: &[[f32; NR]],
    bias: &[f32],
    y: &mut [f32],
    n: usize,
    valid: usize,
    step: Step,
) {
    // Every loop over the tile's rows runs all MR of them, so `acc` is
    // indexed by constants only and stays in registers; only loads and
    // stores look at `valid`. A loop bounded by `valid` put `acc` on the
    // stack and ran the bias add scalar, which at K = 16 (EfficientNet's
    // widest expand) cost more than the product. The bias is where the
    // sums start: added at the end, it was split into pieces of 2, 1, 1,
    // 4 and 8 lanes and put back together, row by row.
    let mut acc = [[0f32; C]; MR];
    if step.first {
        let bias: &[f32; C] = bias.first_chunk().expect("a padded bias");
        acc = [*bias; MR];
    } else {
        for (r, row) in acc.iter_mut().enumerate() {
            *row = *y[r.min(valid - 1) * n..]
                .first_chunk()
                .expect("a whole tile");
        }
    }
    P::product(a, b, &mut acc);
    let relu6 = matches!((step.last, step.epilogue), (true, Epilogue::Relu6));
    for (r, row) in acc.iter().enumerate() {
        if r < valid {
            let out: &mut [f32; C] = y[r * n..].first_chunk_mut().expect("a whole tile");
            if relu6 {
                for (o, v) in out.iter_mut().zip(row) {
                    *o = v.clamp(0.0, 6.0);
                }
            } else {
                *out = *row;
            }
            if let (true, Epilogue::Apply(act)) = (step.last, step.epilogue) {
                act(out);
            }
        }
    }
}

/// How a tile multiplies a panel's rows into its sums.
trait Multiply {
    /// `acc += a · b` over the first C columns of `b`, where `a` holds MR
    /// rows of the block's inputs and `b` the panel's rows.
    fn product<const C: usize>(a: &[&[f32]; MR], b: &[[f32; NR]], acc: &mut [[f32; C]; MR]);
}

/// The six rows of `a`, each cut to the block's length, so the compiler
/// drops the bounds checks (kept in an array, their lengths were reloaded
/// and checked at every step).
#[inline(always)]
fn cut<'a>(a: &[&'a [f32]; MR], n: usize) -> [&'a [f32]; MR] {
    a.map(|row| &row[..n])
}

/// Asks for the panel's row `PREFETCH` steps ahead of `kk`, whose first C
/// values the tile reads.
#[inline(always)]
fn prefetch_ahead<const C: usize>(b: &[[f32; NR]], kk: usize) {
    if let Some(ahead) = b.get(kk + PREFETCH) {
        prefetch(ahead.as_ptr());
        if C > LINE {
            prefetch(ahead[LINE..].as_ptr());
        }
    }
}

/// f32 by f32. With FMA, each row of the tile is one or two vector
/// registers and each step two loads of `b`, six broadcasts of `a` and an
/// FMA per register: `sum` is only ever indexed by constants once the
/// loops unroll, so it lives in registers (a dynamic index anywhere, as a
/// partial row's copy would be, puts it on the stack and the loop goes
/// scalar). `b`'s row is copied into a value first, so it is loaded once
/// per step rather than once per FMA: with 12 FMAs folding their own load
/// of it, the loop was bound by 18 loads per step instead of by its 12
/// FMAs.
struct F32s;

impl Multiply for F32s {
    #[inline(always)]
    fn product<const C: usize>(a: &[&[f32]; MR], b: &[[f32; NR]], acc: &mut [[f32; C]; MR]) {
        let [a0, a1, a2, a3, a4, a5] = cut(a, b.len());
        let mut sum = *acc;
        for (kk, panel) in b.iter().enumerate() {
            prefetch_ahead::<C>(b, kk);
            let w: [f32; C] = std::array::from_fn(|l| panel[l]);
            let v = [a0[kk], a1[kk], a2[kk], a3[kk], a4[kk], a5[kk]];
            for (row, v) in sum.iter_mut().zip(v) {
                for (s, w) in row.iter_mut().zip(&w) {
                    *s = v.mul_add(*w, *s);
                }
            }
        }
        *acc = sum;
    }
}

/// `v` rounded to bf16 (to nearest, ties to even; NaN stays NaN), in the
/// low 16 bits. Branch-free, so that rows of inputs round in vectors.
#[inline(always)]
fn bf16_bits(v: f32) -> u32 {
    let x = v.to_bits();
    // Wraps for NaNs only (whose result is not this).
    let rounded = x.wrapping_add(0x7fff + ((x >> 16) & 1)) >> 16;
    if v.is_nan() {
        (x >> 16) | 0x40
    } else {
        rounded
    }
}

/// The bits of `pair`'s values (one or two) rounded to bf16, the first in
/// the low half, as one f32 slot; a missing second value is 0.
#[inline(always)]
fn bf16_pair(pair: &[f32]) -> f32 {
    f32::from_bits(bf16_bits(pair[0]) | pair.get(1).map_or(0, |&v| bf16_bits(v) << 16))
}

/// Rows of `k` inputs as `rows` rows of `width` slots: `ceil(k / 2)` bf16
/// pairs, then zeros, and zero rows after the inputs'. The fc2 input of a
/// ViT-B layer at batch 8 is 14 M values per GEMM: rounded one at a time,
/// this would cost a fifth of the GEMM. The slots are written in place:
/// `Vec::extend` stayed a call compiled for the baseline x86-64, 8 % of
/// BLIP's captioning with AMX tiles.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn round_rows(x: &[f32], k: usize, width: usize, rows: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * width];
    for (row, slots) in x.chunks_exact(k.max(1)).zip(out.chunks_exact_mut(width)) {
        let (pairs, last) = row.as_chunks::<2>();
        for (slot, pair) in slots.iter_mut().zip(pairs) {
            *slot = bf16_pair(pair);
        }
        if !last.is_empty() {
            slots[pairs.len()] = bf16_pair(last);
        }
    }
    out
}

/// A slot's two bf16 values as f32s: (low, high).
#[inline(always)]
fn widen(pair: f32) -> (f32, f32) {
    let bits = pair.to_bits();
    (
        f32::from_bits(bits << 16),
        f32::from_bits(bits & 0xffff_0000),
    )
}

/// bf16 pairs widened to f32 and multiplied as `vdpbf16ps` does (the
/// high pair first, each product exact and added with one rounding), for
/// CPUs without it: about f32's speed, the same sums but for
/// `vdpbf16ps`'s flushing of denormals.
struct Widened;

impl Multiply for Widened {
    #[inline(always)]
    fn product<const C: usize>(a: &[&[f32]; MR], b: &[[f32; NR]], acc: &mut [[f32; C]; MR]) {
        let [a0, a1, a2, a3, a4, a5] = cut(a, b.len());
        let mut sum = *acc;
        for (kk, panel) in b.iter().enumerate() {
            prefetch_ahead::<C>(b, kk);
            let w: [(f32, f32); C] = std::array::from_fn(|l| widen(panel[l]));
            let v = [a0[kk], a1[kk], a2[kk], a3[kk], a4[kk], a5[kk]];
            for (row, v) in sum.iter_mut().zip(v) {
                let (lo, hi) = widen(v);
                for (s, (wl, wh)) in row.iter_mut().zip(&w) {
                    *s = lo.mul_add(*wl, hi.mul_add(*wh, *s));
                }
            }
        }
        *acc = sum;
    }
}

/// Asks for the cache line holding `p` to be brought into L1. A tile
/// walks its panel row by row, 128 bytes a step, and the hardware's own
/// prefetch did not keep up: asking 16 rows ahead ran the model 1.05x
/// faster at batch 8 on a Xeon with AVX-512 (1.03x on top of aligned
/// panels).
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that reads nothing into the program and
    // cannot fault, whatever the address; it needs only SSE, which every
    // x86-64 has.
    #[allow(unsafe_code)]
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `act(x · Wᵀ + b)` the plain way, in f64.
    fn reference(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        m: usize,
        n: usize,
        k: usize,
        relu6: bool,
    ) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = f64::from(b[j]);
                for kk in 0..k {
                    s += f64::from(x[i * k + kk]) * f64::from(w[j * k + kk]);
                }
                let s = s as f32;
                y[i * n + j] = if relu6 { s.clamp(0.0, 6.0) } else { s };
            }
        }
        y
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40_503));
                ((h >> 8) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Both tile widths, whichever this CPU runs: each sees partial tiles
    /// in both directions, several K blocks and column blocks, a single
    /// row, and every kind of last piece of a panel (24, 16, 8 and odd).
    #[test]
    fn matches_the_plain_product_on_ragged_shapes() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 17, 3),
            (13, 40, 300),
            (6, 16, 256),
            (49, 1280, 320),
            (130, 33, 600),
            (5, 300, 16),
            (50, 24, 96),
            (11, 112, 40),
            (8, 80, 24),
            (200, 40, 20),
            // One tile of rows over K longer than a block: whole panels
            // (the classifier at batch 1).
            (1, 1000, 1280),
            (4, 40, 600),
        ] {
            let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
            let packed = Packed::new(&w, &b, n, k);
            for (epilogue, relu6) in [(Epilogue::Identity, false), (Epilogue::Relu6, true)] {
                let want = reference(&x, &w, &b, m, n, k, relu6);
                let mut narrow = vec![0f32; m * n];
                let all = packed.whole(0..packed.panels());
                rows_of::<{ NR / 2 }, F32s>(&packed, all.clone(), &x, &mut narrow, epilogue);
                let mut wide = vec![0f32; m * n];
                rows_of::<NR, F32s>(&packed, all, &x, &mut wide, epilogue);
                let mut results = vec![(narrow, "16".to_string()), (wide, "32".to_string())];
                // Shared out by rows or by columns, whichever the shape and
                // the thread count call for.
                for threads in 1..=3 {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .expect("a thread pool");
                    let dispatched = pool.install(|| packed.forward(&x, m, epilogue));
                    results.push((dispatched, format!("dispatched, {threads} threads")));
                }
                for (got, how) in results {
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| (g - w).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst < 1e-4 * (k as f32).sqrt(),
                        "{m}x{n}x{k} {epilogue:?}, tiles {how}: {worst}"
                    );
                }
            }
        }
    }

    /// The same bits as the `half` crate's conversion: ties both ways,
    /// either side of them, the edges of the range, infinities and NaN.
    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        let mut bits: Vec<u32> = vec![0, 0x8000_0000, 0x7f80_0000, 0xff80_0000, 0x7fc0_0000];
        bits.extend([
            0x7f7f_ffff,
            0x0000_0001,
            0x0080_0000,
            0xffff_ffff,
            0x7f80_0001,
        ]);
        for base in [0x3f80_0000u32, 0x3f81_0000, 0xc2c8_0000, 0x0001_0000] {
            bits.extend((0..=0x1_0000).step_by(0x10).map(|low| base + low));
            bits.extend([base + 0x7fff, base + 0x8000, base + 0x8001, base + 0x1_8000]);
        }
        for x in bits.into_iter().map(f32::from_bits) {
            let want = half::bf16::from_f32(x).to_bits();
            let got = bf16_bits(x);
            if x.is_nan() {
                assert!(half::bf16::from_bits(got as u16).is_nan(), "{x:?}");
            } else {
                assert_eq!(got, u32::from(want), "{:#x}", x.to_bits());
            }
        }
    }

    /// bf16 products: the plain product of the values rounded to bf16,
    /// on every path this CPU can run (widened pairs at both tile widths,
    /// `vdpbf16ps` and AMX tiles where it has them, each dispatched on 1-3
    /// threads, with and without an activation), odd K, partial tiles and
    /// several blocks of the depth included.
    #[test]
    fn bf16_products_are_the_product_of_rounded_values() {
        let round = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect()
        };
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 17, 3),
            (13, 40, 301),
            (6, 16, 256),
            (130, 33, 600),
            (1, 1000, 1280),
            (20, 2304, 768),
            (40, 64, 577),
            (577, 577, 64),
        ] {
            let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
            let packed = Packed::with_bf16_kernel(&w, &b, n, k, Bf16Kernel::Widened);
            let want = reference(&round(&x), &round(&w), &b, m, n, k, false);
            let clamped = reference(&round(&x), &round(&w), &b, m, n, k, true);
            let pairs = packed.inputs(&x);
            let all = packed.whole(0..packed.panels());
            let mut results = Vec::new();
            let mut narrow = vec![0f32; m * n];
            rows_of::<{ NR / 2 }, Widened>(
                &packed,
                all.clone(),
                &pairs,
                &mut narrow,
                Epilogue::Identity,
            );
            results.push((narrow, &want, "widened, 16".to_string()));
            let mut wide = vec![0f32; m * n];
            rows_of::<NR, Widened>(&packed, all, &pairs, &mut wide, Epilogue::Identity);
            results.push((wide, &want, "widened, 32".to_string()));
            for &kernel in bf16_kernels() {
                let packed = Packed::with_bf16_kernel(&w, &b, n, k, kernel);
                for threads in 1..=3 {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .expect("a thread pool");
                    for (epilogue, want) in
                        [(Epilogue::Identity, &want), (Epilogue::Relu6, &clamped)]
                    {
                        let dispatched = pool.install(|| packed.forward(&x, m, epilogue));
                        let how = format!("{kernel:?}, {epilogue:?}, {threads} threads");
                        results.push((dispatched, want, how));
                    }
                }
            }
            for (got, want, how) in results {
                let worst = got
                    .iter()
                    .zip(want)
                    .map(|(g, w)| (g - w).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < 1e-4 * (k as f32).sqrt(),
                    "{m}x{n}x{k}, {how}: {worst}"
                );
            }
        }
    }

    /// Parts over ranges of the inputs, the first from the bias, add up
    /// to the whole product; parts over ranges of panels are its columns.
    #[test]
    fn parts_add_up_to_the_product() {
        for &(m, n, k, cut) in &[(13, 40, 300, 100), (49, 192, 1152, 576), (7, 24, 9, 1)] {
            let (x, w, b) = (values(m * k, 9), values(n * k, 10), values(n, 11));
            let packed = Packed::new(&w, &b, n, k);
            let want = reference(&x, &w, &b, m, n, k, false);
            let mut sum = vec![0f32; m * n];
            for (inputs, bias) in [(0..cut, true), (cut..k, false)] {
                let xs: Vec<f32> = x
                    .chunks_exact(k)
                    .flat_map(|r| &r[inputs.clone()])
                    .copied()
                    .collect();
                let mut y = vec![f32::NAN; m * n];
                let part = Part {
                    panels: 0..packed.panels(),
                    inputs,
                    bias,
                };
                packed.part_into(&xs, part, &mut y, Epilogue::Identity);
                sum.iter_mut().zip(&y).for_each(|(s, v)| *s += v);
            }
            let panels = packed.panels();
            let mut columns = Vec::new();
            for range in [0..panels / 2, panels / 2..panels] {
                let c0 = range.start * NR;
                let width = (range.end * NR).min(n) - c0;
                let mut y = vec![f32::NAN; m * width];
                packed.part_into(&x, packed.whole(range), &mut y, Epilogue::Identity);
                columns.push((c0, width, y));
            }
            for (i, want) in want.iter().enumerate() {
                let (row, col) = (i / n, i % n);
                let (c0, width, y) = columns
                    .iter()
                    .find(|(c0, width, _)| (*c0..c0 + width).contains(&col))
                    .expect("a part holds every column");
                let got = [sum[i], y[row * width + col - c0]];
                for got in got {
                    assert!(
                        (got - want).abs() < 1e-3,
                        "{m}x{n}x{k}, [{row}, {col}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn weights_given_k_major_pack_the_same() {
        for &(n, k) in &[(64, 577), (7, 3), (40, 33), (577, 64)] {
            let (w, b) = (values(n * k, 7), values(n, 8));
            let transposed: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
            for products in [Products::F32, Products::Bf16] {
                let a = Packed::with_products(&w, &b, n, k, products);
                let t = Packed::from_k_major(&transposed, &b, n, k, products);
                let bits = |p: &Packed| p.panels.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&t), "{n}x{k} {products:?}");
            }
        }
    }

    #[test]
    fn other_activations_see_each_value_once_after_the_bias() {
        fn double(v: &mut [f32]) {
            v.iter_mut().for_each(|x| *x *= 2.0);
        }
        let (m, n, k) = (9, 20, 600);
        let (x, w, b) = (values(m * k, 4), values(n * k, 5), values(n, 6));
        let want: Vec<f32> = reference(&x, &w, &b, m, n, k, false)
            .iter()
            .map(|v| v * 2.0)
            .collect();
        let got = Packed::new(&w, &b, n, k).forward(&x, m, Epilogue::Apply(double));
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "{worst}");
    }
}
