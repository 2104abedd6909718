//! bf16 products on AMX tiles (Intel Xeon from Sapphire Rapids on).
//!
//! One `tdpbf16ps` multiplies a 16×32 tile of bf16 inputs by a 32×16
//! tile of bf16 weights into 16×16 f32 sums: 8192 multiply-adds, where
//! `vdpbf16ps` does 32. The packed layout already is the tiles': a panel's
//! row of 32 bf16 pairs is two weight tiles' rows side by side (128 bytes
//! apart, which `tileloadd` takes as its stride), and rows of input pairs
//! are the input tiles' rows. Only the depth is padded to whole tiles:
//! panels with zero rows at pack time, inputs as they are rounded, both to
//! a multiple of 16 pairs, and the inputs' rows to a multiple of 16.
//!
//! A step loads two input tiles and two weight tiles and runs four
//! products into a 32×32 block of sums (the four other tiles). The sums
//! stay in tiles over the whole depth, from the bias, and each block is
//! stored once: into the output where it is whole tiles of it (a ReLU6
//! then applied in place), or else, and before any other activation,
//! through a scratch block, the activation applied as it is copied out.
//!
//! Rust has no stable AMX intrinsics: the instructions are inline
//! assembly.

use std::arch::asm;

use super::{Epilogue, NR, Packed, Part};

/// Rows of a tile, and bf16 pairs in one of its 64-byte rows.
pub(super) const TILE: usize = 16;

/// Bytes of a block of input rows kept in L2 while the panels pass over
/// it: each panel is read once per block, from L3 or memory, and reused
/// by every 32 rows of it.
const BLOCK_BYTES: usize = 1 << 20;

/// Whether this process can run tiles: the CPU has AMX-TILE and AMX-BF16,
/// and Linux granted the process the tiles' state. Linux hands out that
/// state (8 KiB per thread) only on request: without it the first tile
/// instruction raises SIGILL.
pub(super) fn available() -> bool {
    // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    let leaf = std::arch::x86_64::__cpuid_count(7, 0);
    if leaf.edx & (1 << 22) == 0 || leaf.edx & (1 << 24) == 0 {
        return false;
    }
    granted()
}

#[cfg(target_os = "linux")]
fn granted() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a request about this process's own state; the kernel reads
    // nothing from our memory.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn granted() -> bool {
    false
}

/// `ldtilecfg`'s operand: palette 1, the first eight tiles 16 rows of 64
/// bytes each.
#[repr(C, align(64))]
struct Config([u8; 64]);

const CONFIG: Config = {
    let mut bytes = [0u8; 64];
    bytes[0] = 1;
    let mut t = 0;
    while t < 8 {
        bytes[16 + 2 * t] = 64;
        bytes[48 + t] = TILE as u8;
        t += 1;
    }
    Config(bytes)
};

/// A 32×32 block of sums, as the tiles store it.
#[repr(C, align(64))]
struct Block([[f32; NR]; 2 * TILE]);

/// `super::rows` on tiles. `x` holds the rows of input pairs, each
/// `packed.depth()` long, and zero rows after the last to a multiple of
/// 16; `part` takes every input.
///
/// # Safety
/// `available()` must have returned true in this process.
pub(super) unsafe fn rows(
    packed: &Packed,
    part: Part,
    x: &[f32],
    y: &mut [f32],
    epilogue: Epilogue,
) {
    let depth = packed.depth();
    assert_eq!(part.inputs, 0..depth, "tiles take every input");
    assert!(depth.is_multiple_of(TILE), "panels padded to whole tiles");
    let first = part.panels.start * NR;
    let n = (part.panels.end * NR).min(packed.n) - first;
    let m = y.len() / n;
    assert!(
        x.len() >= m.next_multiple_of(TILE) * depth,
        "input rows padded to whole tiles"
    );
    let block_rows = (BLOCK_BYTES / (depth * 4))
        .max(1)
        .next_multiple_of(2 * TILE);
    let mut sums = Block([[0f32; NR]; 2 * TILE]);
    // SAFETY: `available()` (the caller's promise); the operand is 64
    // bytes.
    unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack)) };
    for b0 in (0..m).step_by(block_rows) {
        for p in part.panels.clone() {
            let panel = &packed.panels[p * depth * NR..][..depth * NR];
            let bias = part.bias.then(|| &packed.bias[p * NR..][..NR]);
            let cols = NR.min(packed.n - p * NR);
            for r0 in (b0..(b0 + block_rows).min(m)).step_by(2 * TILE) {
                let valid = (m - r0).min(2 * TILE);
                let a = &x[r0 * depth..];
                let column = p * NR - first;
                // Whole tiles of the output are stored in place, unless an
                // activation follows: it runs faster on the scratch block
                // (in L1) as it is copied out than on the output just
                // stored by the tiles, where GELU waited on its loads.
                let direct = cols == NR
                    && valid.is_multiple_of(TILE)
                    && !matches!(epilogue, Epilogue::Apply(_));
                let (out, stride) = if direct {
                    let block = &mut y[r0 * n + column..][..(valid - 1) * n + NR];
                    (block.as_mut_ptr(), n)
                } else {
                    (sums.0.as_mut_ptr().cast::<f32>(), NR)
                };
                // SAFETY: `available()`; the input tiles read rows `r0..r0
                // + 16·tiles` (inside the padded rows, as `valid > 16` for
                // two), the weight tiles rows of this panel, the bias 32
                // floats; the sums are stored as 16·tiles rows of 32 floats
                // `stride` apart, inside the scratch block or (whole
                // tiles) the output block above.
                unsafe {
                    if valid > TILE {
                        product::<2>(a, panel, depth, bias, out, stride);
                    } else {
                        product::<1>(a, panel, depth, bias, out, stride);
                    }
                }
                for (r, row) in sums.0.iter_mut().enumerate().take(valid) {
                    let at = (r0 + r) * n + column;
                    if direct {
                        finish(&mut y[at..][..NR], epilogue);
                    } else if cols == NR {
                        // A constant length: vector moves, not a call.
                        finish(row, epilogue);
                        *y[at..].first_chunk_mut().expect("a whole panel") = *row;
                    } else {
                        finish(&mut row[..cols], epilogue);
                        y[at..][..cols].copy_from_slice(&row[..cols]);
                    }
                }
            }
        }
    }
    // SAFETY: as `ldtilecfg`. Gives the tiles' state back, so that the
    // kernel need not save it when it switches this thread out.
    unsafe { asm!("tilerelease", options(nostack)) };
}

/// The activation, on sums already in place.
#[inline(always)]
fn finish(out: &mut [f32], epilogue: Epilogue) {
    match epilogue {
        Epilogue::Identity => {}
        Epilogue::Relu6 => out.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        Epilogue::Apply(act) => act(out),
    }
}

/// The 16·R rows by 32 at `out`, `stride` floats apart, = bias + `a` · the
/// panel, over the whole depth: `a` from its first row, rows `depth` pairs
/// long; the panel `depth` rows of 32 pairs.
///
/// # Safety
/// The tiles are configured as `CONFIG`; `a` holds 16·R rows of `depth`;
/// `out` is valid for writes of those rows.
#[inline(always)]
unsafe fn product<const R: usize>(
    a: &[f32],
    panel: &[f32],
    depth: usize,
    bias: Option<&[f32]>,
    out: *mut f32,
    stride: usize,
) {
    debug_assert!(a.len() >= R * TILE * depth && panel.len() == depth * NR);
    let (a, b) = (a.as_ptr(), panel.as_ptr());
    let (a_stride, b_stride) = (depth * 4, NR * 4);
    // SAFETY (all blocks): tiles as `CONFIG` says (the caller's promise);
    // each load reads 16 rows of 64 bytes at the given stride, inside `a`,
    // the panel or the bias (stride 0: its 16 rows are the same row), and
    // each store writes 16 rows of 64 bytes at `out` (the caller's
    // promise).
    unsafe {
        match bias {
            Some(bias) => {
                let (lo, hi) = (bias.as_ptr(), bias[TILE..].as_ptr());
                asm!(
                    "tileloadd tmm0, [{lo} + {zero}*1]",
                    "tileloadd tmm1, [{hi} + {zero}*1]",
                    "tileloadd tmm2, [{lo} + {zero}*1]",
                    "tileloadd tmm3, [{hi} + {zero}*1]",
                    lo = in(reg) lo, hi = in(reg) hi, zero = in(reg) 0usize,
                    options(nostack, readonly),
                );
            }
            None => asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem),
            ),
        }
        for i in (0..depth).step_by(TILE) {
            let (a0, b0) = (a.add(i), b.add(i * NR));
            if R == 2 {
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0, a1 = in(reg) a0.add(TILE * depth), sa = in(reg) a_stride,
                    b0 = in(reg) b0, b1 = in(reg) b0.add(TILE), sb = in(reg) b_stride,
                    options(nostack, readonly),
                );
            } else {
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    a0 = in(reg) a0, sa = in(reg) a_stride,
                    b0 = in(reg) b0, b1 = in(reg) b0.add(TILE), sb = in(reg) b_stride,
                    options(nostack, readonly),
                );
            }
        }
        let st = stride * 4;
        asm!(
            "tilestored [{s0} + {st}*1], tmm0",
            "tilestored [{s1} + {st}*1], tmm1",
            s0 = in(reg) out, s1 = in(reg) out.add(TILE), st = in(reg) st,
            options(nostack),
        );
        if R == 2 {
            let lower = out.add(TILE * stride);
            asm!(
                "tilestored [{s2} + {st}*1], tmm2",
                "tilestored [{s3} + {st}*1], tmm3",
                s2 = in(reg) lower, s3 = in(reg) lower.add(TILE), st = in(reg) st,
                options(nostack),
            );
        }
    }
}
