//! Attention heads out of a projection and back: candle's reshape, permute
//! and copy, or on CUDA one kernel of ours each way (`cuda.rs`: candle's
//! strided copies there cost more than the attention's GEMMs).

use candle_core::{Result, Tensor, bail};

/// `x`: `[B, N, P·H·D]`, `parts` projections (P) of `heads` heads (H)
/// side by side. Returns each projection as `[B, H, N, D]`, contiguous,
/// the first multiplied by `scale`.
pub fn split_heads(x: &Tensor, parts: usize, heads: usize, scale: f64) -> Result<Vec<Tensor>> {
    let (b, n, width) = x.dims3()?;
    if parts * heads == 0 || width % (parts * heads) != 0 {
        bail!("{width} values per token are not {parts} × {heads} heads");
    }
    #[cfg(feature = "cuda")]
    if super::cuda::serves(x) {
        let all = super::cuda::split_heads(x, parts, heads, scale)?;
        return (0..parts).map(|p| all.get(p)).collect();
    }
    let all = x
        .reshape((b, n, parts, heads, width / (parts * heads)))?
        .permute((2, 0, 3, 1, 4))?;
    (0..parts)
        .map(|p| match all.get(p)? {
            part if p == 0 && scale != 1.0 => part * scale,
            part => part.contiguous(),
        })
        .collect()
}

/// `[B, H, N, D]` → `[B, N, H·D]`, the heads side by side.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::cuda::serves(x) {
        return super::cuda::merge_heads(x);
    }
    let (b, h, n, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, n, h * d))
}
