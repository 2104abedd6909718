//! Multi-head self-attention `softmax(q·kᵀ + mask)·v` on the CPU, straight
//! from the fused query-key-value projection, one task per (image, head),
//! so that each head's `[n, n]` scores stay in cache.
//!
//! As three candle ops the scores of every head went to memory between
//! them: 128 MB per layer for BLIP's 577 image tokens at batch 8, written
//! by one matmul, read and written by the softmax, read by the next
//! matmul. Here a task gathers its head's queries (scaled), keys and
//! values from the projection's rows and packs the keys and values for the
//! packed GEMM (`kernels/gemm/`, 577×64 each, cheap beside the
//! products), runs both products and the softmax (`kernels/softmax.rs`) in
//! between on the calling thread, and the heads are laid side by side at
//! the end. Splitting the projection into heads and merging them back had
//! been three copies and a scaling pass over `[B, N, C]` tensors per
//! layer, on one thread. With bf16 products the two GEMMs round their
//! operands (queries and keys, weights and values) to bf16 as the dense
//! layers do. On CUDA in bf16 a fused kernel does the same (`cuda.rs`);
//! other devices and dtypes use candle's ops.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{
    gemm::{Epilogue, Packed, Products},
    heads::{merge_heads, split_heads},
    softmax::{softmax_last_dim, softmax_rows},
};

/// `qkv`: `[B, N, 3·C]`, the queries, keys and values of `heads` heads side
/// by side, as one projection makes them; queries are multiplied by
/// `scale`. `mask`: `[N, N]`, added to every head's scores (−∞ hides a
/// key). `products`: how the CPU's GEMMs multiply. Returns `[B, N, C]`, the
/// heads side by side.
pub fn self_attention(
    qkv: &Tensor,
    heads: usize,
    scale: f64,
    mask: Option<&Tensor>,
    products: Products,
) -> Result<Tensor> {
    let (_, _, c3) = qkv.dims3()?;
    if heads == 0 || c3 % (3 * heads) != 0 {
        bail!("self-attention: {c3} values per token are not 3 × {heads} heads");
    }
    if qkv.device().is_cpu() && qkv.dtype() == DType::F32 {
        let mask = match mask {
            Some(m) => Some(m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        return qkv.contiguous()?.apply_op1_no_bwd(&SelfAttention {
            heads,
            scale: scale as f32,
            mask,
            products,
        });
    }
    #[cfg(feature = "cuda")]
    if mask.is_none() && super::cuda::flash_serves(qkv, heads)? {
        return super::cuda::flash_attention(qkv, heads, scale);
    }
    let qkv = split_heads(qkv, 3, heads, scale)?;
    let mut scores = qkv[0].matmul(&qkv[1].t()?)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    merge_heads(&softmax_last_dim(&scores)?.matmul(&qkv[2])?)
}

/// `softmax(q·kᵀ + mask)·v` on heads already split: `q` `[B, H, T, D]`
/// (scaled), `k` and `v` `[B, H, N, D]`, `mask` `[T, N]`. candle's ops, or
/// on CUDA one kernel of ours for a single query against contiguous keys
/// and values (a decoding step's attention to the image tokens).
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if mask.is_none() && super::cuda::decode_serves(q, k, v) {
        return super::cuda::decode_attention(q, k, v);
    }
    let scores = q.matmul(&k.t()?)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    softmax_last_dim(&scores)?.matmul(v)
}

struct SelfAttention {
    heads: usize,
    scale: f32,
    /// `[N, N]`.
    mask: Option<Vec<f32>>,
    products: Products,
}

impl CustomOp1 for SelfAttention {
    fn name(&self) -> &'static str {
        "self-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(qkv) = storage else {
            bail!("self-attention supports f32 only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("self-attention needs a contiguous input");
        };
        let qkv = &qkv[start..end];
        let &[b, n, c3] = layout.dims() else {
            bail!("self-attention takes [B, N, 3·C], got {:?}", layout.dims());
        };
        // `self_attention` checked that the heads divide the projection.
        let heads = self.heads;
        let (c, d) = (c3 / 3, c3 / 3 / heads);
        if let Some(mask) = &self.mask
            && mask.len() != n * n
        {
            bail!(
                "self-attention: a mask of {} values for [{n}, {n}] scores",
                mask.len()
            );
        }
        // [B, H, N, D]: one contiguous chunk per task.
        let mut by_head = vec![0f32; b * heads * n * d];
        if n * d > 0 {
            by_head
                .par_chunks_mut(n * d)
                .enumerate()
                .for_each(|(task, out)| {
                    let (image, head) = (task / heads, task % heads);
                    let tokens = &qkv[image * n * c3..][..n * c3];
                    // Columns `[part·C + head·D, +D)` of every token, a
                    // slice copy each: as a flattened iterator, one value
                    // at a time, these gathers took a third of the time.
                    let gather = |part: usize| -> Vec<f32> {
                        let mut columns = Vec::with_capacity(n * d);
                        for token in tokens.chunks_exact(c3) {
                            columns.extend_from_slice(&token[part * c + head * d..][..d]);
                        }
                        columns
                    };
                    let mut q = gather(0);
                    q.iter_mut().for_each(|v| *v *= self.scale);
                    self.head(&q, &gather(1), &gather(2), out, n, d);
                });
        }
        let mut merged = vec![0f32; b * n * c];
        if n * c > 0 {
            merged
                .par_chunks_mut(n * c)
                .zip(by_head.par_chunks(heads * n * d))
                .for_each(|(image, by_head)| {
                    for (i, token) in image.chunks_exact_mut(c).enumerate() {
                        for (h, part) in token.chunks_exact_mut(d).enumerate() {
                            part.copy_from_slice(&by_head[(h * n + i) * d..][..d]);
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(merged), Shape::from((b, n, c))))
    }
}

impl SelfAttention {
    /// One (image, head): `q` `[Nq, D]`, `k` and `v` `[Nk, D]` → `out`
    /// `[Nq, D]`.
    fn head(&self, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], nk: usize, d: usize) {
        if nk == 0 {
            return;
        }
        let head = PackedHead::new(k, v, nk, d, self.products);
        head.attend(q, self.mask.as_deref(), out);
    }
}

/// Query rows whose scores are computed, normalised and multiplied by the
/// values together (`PackedHead::attend`).
const QUERY_BLOCK: usize = 64;

/// One head's keys and values packed for the GEMM: `attend` multiplies by
/// them without copying them again.
struct PackedHead {
    keys: Packed,
    values: Packed,
}

impl PackedHead {
    /// `k` and `v`: `[Nk, D]`.
    fn new(k: &[f32], v: &[f32], nk: usize, d: usize, products: Products) -> Self {
        Self {
            keys: Packed::with_products(k, &vec![0f32; nk], nk, d, products),
            values: Packed::from_k_major(v, &vec![0f32; d], d, nk, products),
        }
    }

    /// `q` `[Nq, D]` (scaled) → `out` `[Nq, D]`; `mask` `[Nq, Nk]` is
    /// added to the scores.
    ///
    /// Queries are taken `QUERY_BLOCK` rows at a time, so that their
    /// scores stay in L2 from the product through the softmax (and, with
    /// bf16 products, the rounding) to the product by the values: all 577
    /// rows of a BLIP head's scores are 1.3 MB.
    fn attend(&self, q: &[f32], mask: Option<&[f32]>, out: &mut [f32]) {
        let (nk, d) = (self.keys.n(), self.keys.k());
        if d == 0 {
            return;
        }
        let rows = QUERY_BLOCK.min(q.len() / d).max(1);
        let mut scores = vec![0f32; rows * nk];
        for (i, (q, out)) in q.chunks(rows * d).zip(out.chunks_mut(rows * d)).enumerate() {
            let scores = &mut scores[..q.len() / d * nk];
            self.keys.forward_into(q, scores, Epilogue::Identity);
            if let Some(mask) = mask {
                let mask = &mask[i * rows * nk..][..scores.len()];
                scores.iter_mut().zip(mask).for_each(|(s, m)| *s += m);
            }
            softmax_rows(scores, nk);
            self.values.forward_into(scores, out, Epilogue::Identity);
        }
    }
}

/// Cross-attention keys and values `[B, H, Nk, D]`, packed once for every
/// query that will read them (BLIP's decoder: one query per step against
/// the same image tokens for the whole caption). candle's matmul packed
/// them again at every step: ~6 % of a BLIP batch on the CPU.
pub struct PackedKv {
    heads: Vec<PackedHead>,
    shape: (usize, usize, usize),
}

impl PackedKv {
    /// `k`, `v`: `[B, H, Nk, D]`, for GEMMs multiplying as `products` says;
    /// `None` off the CPU or for other dtypes.
    pub fn new(k: &Tensor, v: &Tensor, products: Products) -> Result<Option<Self>> {
        if !k.device().is_cpu() || k.dtype() != DType::F32 {
            return Ok(None);
        }
        let (b, h, nk, d) = k.dims4()?;
        if v.dims4()? != (b, h, nk, d) || nk * d == 0 {
            bail!(
                "cross-attention keys {:?} and values {:?}",
                k.dims(),
                v.dims()
            );
        }
        let (k, v) = (
            k.flatten_all()?.to_vec1::<f32>()?,
            v.flatten_all()?.to_vec1::<f32>()?,
        );
        let heads = k
            .par_chunks_exact(nk * d)
            .zip(v.par_chunks_exact(nk * d))
            .map(|(k, v)| PackedHead::new(k, v, nk, d, products))
            .collect();
        Ok(Some(Self {
            heads,
            shape: (b, h, d),
        }))
    }

    /// `softmax(q·kᵀ)·v` for `q` `[B, H, Nq, D]` (scaled).
    pub fn attend(&self, q: &Tensor) -> Result<Tensor> {
        q.contiguous()?.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for PackedKv {
    fn name(&self) -> &'static str {
        "packed-cross-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(q) = storage else {
            bail!("packed-cross-attention supports f32 only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("packed-cross-attention needs a contiguous query");
        };
        let (b, h, nq, d) = layout.shape().dims4()?;
        if (b, h, d) != self.shape {
            bail!(
                "packed-cross-attention: queries {:?} for keys of {:?}",
                layout.dims(),
                self.shape
            );
        }
        let mut out = vec![0f32; b * h * nq * d];
        if nq * d > 0 {
            out.par_chunks_mut(nq * d)
                .zip(q[start..end].par_chunks(nq * d))
                .zip(&self.heads)
                .for_each(|((out, q), head)| head.attend(q, None, out));
        }
        Ok((CpuStorage::F32(out), Shape::from((b, h, nq, d))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Split into heads, scaled queries, candle's matmuls and candle-nn's
    /// softmax, heads merged: what the layers ran before this kernel.
    fn by_candles_ops(
        qkv: &Tensor,
        heads: usize,
        scale: f64,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, n, c3) = qkv.dims3()?;
        let qkv = qkv
            .reshape((b, n, 3, heads, c3 / 3 / heads))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)? * scale)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        candle_nn::ops::softmax_last_dim(&scores)?
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, n, c3 / 3))
    }

    /// bf16 products within their rounding: queries and keys rounded to
    /// 8 bits of mantissa move scores of ~N(0, 1) by ~1e-2.
    #[test]
    fn matches_candles_ops_with_and_without_a_mask() -> Result<()> {
        let dev = Device::Cpu;
        // 150 tokens: three blocks of queries, the last partial.
        for (b, heads, n, d) in [
            (2, 3, 5, 8),
            (1, 2, 37, 64),
            (2, 1, 1, 16),
            (3, 4, 9, 16),
            (1, 2, 150, 32),
        ] {
            let qkv = Tensor::randn(0f32, 1.0, (b, n, 3 * heads * d), &dev)?;
            let scale = (d as f64).powf(-0.5);
            let causal: Vec<f32> = (0..n * n)
                .map(|i| {
                    if i % n > i / n {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            let causal = Tensor::from_vec(causal, (n, n), &dev)?;
            for mask in [None, Some(&causal)] {
                let want = by_candles_ops(&qkv, heads, scale, mask)?;
                for (products, tolerance) in [(Products::F32, 1e-5), (Products::Bf16, 3e-2)] {
                    let got = self_attention(&qkv, heads, scale, mask, products)?;
                    assert_eq!(got.dims(), want.dims());
                    let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(
                        diff < tolerance,
                        "{b}x{heads}x{n}x{d}, mask {}, {products:?}: {diff}",
                        mask.is_some()
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn rejects_a_projection_that_is_not_three_parts_of_whole_heads() -> Result<()> {
        let qkv = Tensor::zeros((1, 4, 20), DType::F32, &Device::Cpu)?;
        assert!(self_attention(&qkv, 3, 1.0, None, Products::F32).is_err());
        assert!(self_attention(&qkv, 0, 1.0, None, Products::F32).is_err());
        Ok(())
    }
}
