//! Runs of output pixels of a depthwise row with AVX-512 intrinsics.
//!
//! A run is `RUN` output pixels × 16 channels (one register each). Per
//! kernel row, the run's `K` taps are loaded into registers once, and each
//! input pixel the run reaches is loaded once for every sum whose tap
//! falls on it: `(RUN − 1)·S + K` loads for `RUN·K` multiply-adds. The
//! portable path loads an input per tap and pixel, plus its tap list and
//! a bounds check per load: on the wide rows of EfficientNet-Lite0's
//! first stages it ran at 30-45 GFLOP/s of a core's ~115, and a portable
//! version of this loop was not unrolled (its inputs went through the
//! stack).

use std::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_max_ps, _mm512_min_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_storeu_ps,
};

/// Output pixels per run: seven sums in flight cover an FMA's latency,
/// and EfficientNet-Lite0's rows (7, 14, 28, 56 and 112 pixels) are whole
/// runs.
pub(super) const RUN: usize = 7;
/// Channels per run.
pub(super) const LANES: usize = 16;

/// One kernel row of a run: its input row (pixel `ix` at `ix·c`) and its
/// `K` taps (`c` apart), both from the run's first channel.
#[derive(Clone, Copy)]
pub(super) struct KernelRow<'a> {
    pub input: &'a [f32],
    pub taps: &'a [f32],
}

/// The run's shape: `c` floats between pixels, input rows `width` pixels
/// wide, and the input pixel of its first tap, `first` (before the row
/// where the padding is on the left).
#[derive(Clone, Copy)]
pub(super) struct Span {
    pub c: usize,
    pub width: usize,
    pub first: isize,
}

/// `RUN` output pixels × `LANES` channels: the bias plus every kernel
/// row's taps over `span`, clamped to [0, 6] if `relu6`, into `out`
/// (pixels `c` floats apart). Only the run's inputs `LO..HI` are read
/// (`first + i` for input `i`): those before and after are the padding's
/// zeros, which a row's edge runs know when compiled, so their taps cost
/// nothing. With `CHECKED`, inputs outside the row are skipped as well,
/// for runs at both edges of a row or of other shapes.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn run<
    const K: usize,
    const S: usize,
    const LO: usize,
    const HI: usize,
    const CHECKED: bool,
>(
    rows: &[KernelRow<'_>],
    Span { c, width, first }: Span,
    bias: &[f32],
    out: &mut [f32],
    relu6: bool,
) {
    assert!(bias.len() >= LANES && out.len() >= (RUN - 1) * c + LANES);
    assert!(CHECKED || (first + LO as isize >= 0 && first + HI as isize <= width as isize));
    // SAFETY: every load and store below is inside the slices: those of
    // `bias` and `out` as asserted above, the taps' and inputs' as
    // asserted per row, where an input `first + i` is read only if it lies
    // in `0..width` (as asserted above, without `CHECKED`).
    unsafe {
        let mut acc = [_mm512_loadu_ps(bias.as_ptr()); RUN];
        for row in rows {
            assert!(
                row.input.len() >= (width.max(1) - 1) * c + LANES
                    && row.taps.len() >= (K - 1) * c + LANES
            );
            let mut taps = [_mm512_setzero_ps(); K];
            for (kx, tap) in taps.iter_mut().enumerate() {
                *tap = _mm512_loadu_ps(row.taps.as_ptr().add(kx * c));
            }
            // Written per pixel and tap, each loading its input: once the
            // loops unroll, the loads of one input merge. A loop over the
            // inputs that picked out the sums each feeds was not unrolled
            // at stride 2, and its sums went through the stack.
            for (p, sum) in acc.iter_mut().enumerate() {
                for (kx, tap) in taps.iter().enumerate() {
                    let i = p * S + kx;
                    let ix = first + i as isize;
                    if !(LO..HI).contains(&i) || CHECKED && !(0..width as isize).contains(&ix) {
                        continue;
                    }
                    let x = _mm512_loadu_ps(row.input.as_ptr().offset(ix * c as isize));
                    *sum = _mm512_fmadd_ps(x, *tap, *sum);
                }
            }
        }
        let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
        for (p, sum) in acc.into_iter().enumerate() {
            let v: __m512 = if relu6 {
                _mm512_min_ps(_mm512_max_ps(sum, zero), six)
            } else {
                sum
            };
            _mm512_storeu_ps(out.as_mut_ptr().add(p * c), v);
        }
    }
}
