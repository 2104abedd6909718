//! bf16 pairs by AVX-512 BF16's `vdpbf16ps`: a 6×32 tile is 12 registers
//! of sums, each step two loads of weight pairs, six broadcast input pairs
//! and 12 instructions of 32 multiply-adds, where f32 FMAs do 16.

use std::arch::x86_64::{
    __m512, __m512bh, _mm512_dpbf16_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_set1_ps,
    _mm512_storeu_ps,
};

use super::{Epilogue, MR, Multiply, NR, Packed, Part, cut, prefetch_ahead, rows_of};

/// `super::rows` for bf16 products, with the tiles inlined.
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn rows(
    packed: &Packed,
    part: Part,
    x: &[f32],
    y: &mut [f32],
    epilogue: Epilogue,
) {
    rows_of::<NR, Dpbf16>(packed, part, x, y, epilogue);
}

struct Dpbf16;

impl Multiply for Dpbf16 {
    #[inline(always)]
    fn product<const C: usize>(a: &[&[f32]; MR], b: &[[f32; NR]], acc: &mut [[f32; C]; MR]) {
        // SAFETY: only `rows` above, which requires the features,
        // tiles with this product.
        unsafe { product(a, b, acc) }
    }
}

/// Every tile is a whole panel's 32 columns wide here: narrower ones
/// (a layer's last 24, 16 or 8 columns) compute all 32 over the
/// panel's zero padding and keep their C. The 12 sums are named
/// variables: as an array of arrays like `F32s`', they went through
/// the stack at every step (1.0x f32's speed instead of ~2x). The
/// weights are aligned loads: `loadu` copies through a temporary,
/// checked for overlap, wherever debug assertions are on (tests, dev
/// benches).
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
fn product<const C: usize>(a: &[&[f32]; MR], b: &[[f32; NR]], acc: &mut [[f32; C]; MR]) {
    let [a0, a1, a2, a3, a4, a5] = cut(a, b.len());
    let mut wide = [[0f32; NR]; MR];
    for (w, s) in wide.iter_mut().zip(acc.iter()) {
        w[..C].copy_from_slice(s);
    }
    // SAFETY: 16 floats at offsets 0 and 16 of a row of 32.
    let load = |row: &[f32; NR]| unsafe {
        [
            _mm512_loadu_ps(row.as_ptr()),
            _mm512_loadu_ps(row[16..].as_ptr()),
        ]
    };
    let [[mut s00, mut s01], [mut s10, mut s11], [mut s20, mut s21]] =
        [load(&wide[0]), load(&wide[1]), load(&wide[2])];
    let [[mut s30, mut s31], [mut s40, mut s41], [mut s50, mut s51]] =
        [load(&wide[3]), load(&wide[4]), load(&wide[5])];
    for (kk, panel) in b.iter().enumerate() {
        prefetch_ahead::<NR>(b, kk);
        // SAFETY: a panel's row is 32 floats from a cache line (the
        // panels start on one and rows are 128 bytes): two aligned
        // vectors.
        let (w0, w1) = unsafe {
            (
                pairs(_mm512_load_ps(panel.as_ptr())),
                pairs(_mm512_load_ps(panel[16..].as_ptr())),
            )
        };
        let v0 = pairs(_mm512_set1_ps(a0[kk]));
        s00 = _mm512_dpbf16_ps(s00, v0, w0);
        s01 = _mm512_dpbf16_ps(s01, v0, w1);
        let v1 = pairs(_mm512_set1_ps(a1[kk]));
        s10 = _mm512_dpbf16_ps(s10, v1, w0);
        s11 = _mm512_dpbf16_ps(s11, v1, w1);
        let v2 = pairs(_mm512_set1_ps(a2[kk]));
        s20 = _mm512_dpbf16_ps(s20, v2, w0);
        s21 = _mm512_dpbf16_ps(s21, v2, w1);
        let v3 = pairs(_mm512_set1_ps(a3[kk]));
        s30 = _mm512_dpbf16_ps(s30, v3, w0);
        s31 = _mm512_dpbf16_ps(s31, v3, w1);
        let v4 = pairs(_mm512_set1_ps(a4[kk]));
        s40 = _mm512_dpbf16_ps(s40, v4, w0);
        s41 = _mm512_dpbf16_ps(s41, v4, w1);
        let v5 = pairs(_mm512_set1_ps(a5[kk]));
        s50 = _mm512_dpbf16_ps(s50, v5, w0);
        s51 = _mm512_dpbf16_ps(s51, v5, w1);
    }
    let sums = [
        [s00, s01],
        [s10, s11],
        [s20, s21],
        [s30, s31],
        [s40, s41],
        [s50, s51],
    ];
    for (w, [lo, hi]) in wide.iter_mut().zip(sums) {
        // SAFETY: as `load`.
        unsafe {
            _mm512_storeu_ps(w.as_mut_ptr(), lo);
            _mm512_storeu_ps(w[16..].as_mut_ptr(), hi);
        }
    }
    for (s, w) in acc.iter_mut().zip(&wide) {
        s.copy_from_slice(&w[..C]);
    }
}

/// 16 slots of bf16 pairs, as the instruction takes them. Compiled
/// for AVX-512 like its callers, so that the vector stays in a
/// register (without it, the value went through the stack).
#[target_feature(enable = "avx512f")]
#[inline]
fn pairs(v: __m512) -> __m512bh {
    // SAFETY: both are 64 bytes of plain lanes; every bit pattern is a
    // valid value of either.
    unsafe { std::mem::transmute::<__m512, __m512bh>(v) }
}
