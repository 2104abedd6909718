//! Multi-head attention `softmax(q·kᵀ + mask)·v` on the CPU, one task per
//! (image, head), so that each head's `[n, n]` scores stay in cache.
//!
//! As three candle ops the scores of every head went to memory between
//! them: 128 MB per layer for BLIP's 577 image tokens at batch 8, written
//! by one matmul, read and written by the softmax, read by the next
//! matmul. Here a task packs its head's keys and values (`kernels/gemm.rs`,
//! 577×64 each, cheap beside the products), runs both products on the
//! packed GEMM and the softmax (`kernels/softmax.rs`) in between, on the
//! calling thread. Other devices and dtypes use candle's ops.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{
    gemm::{Epilogue, Packed},
    softmax::{softmax_last_dim, softmax_rows},
};

/// `q`: `[B, H, Nq, D]` (already scaled), `k`, `v`: `[B, H, Nk, D]`;
/// `mask`: `[Nq, Nk]`, added to every head's scores (−∞ hides a key).
/// Returns `[B, H, Nq, D]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    if q.device().is_cpu() && q.dtype() == DType::F32 {
        let mask = match mask {
            Some(m) => Some(m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        return q.contiguous()?.apply_op3_no_bwd(
            &k.contiguous()?,
            &v.contiguous()?,
            &Attention { mask },
        );
    }
    let mut scores = q.matmul(&k.t()?)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    softmax_last_dim(&scores)?.matmul(v)
}

struct Attention {
    /// `[Nq, Nk]`.
    mask: Option<Vec<f32>>,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) = (qs, ks, vs) else {
            bail!("attention supports f32 only");
        };
        let (Some((q0, q1)), Some((k0, k1)), Some((v0, v1))) = (
            ql.contiguous_offsets(),
            kl.contiguous_offsets(),
            vl.contiguous_offsets(),
        ) else {
            bail!("attention needs contiguous inputs");
        };
        let (q, k, v) = (&q[q0..q1], &k[k0..k1], &v[v0..v1]);
        let (&[b, h, nq, d], &[kb, kh, nk, kd]) = (ql.dims(), kl.dims()) else {
            bail!(
                "attention takes [B, H, N, D] queries and keys, got {:?} and {:?}",
                ql.dims(),
                kl.dims()
            );
        };
        if (kb, kh, kd) != (b, h, d) || vl.dims() != kl.dims() {
            bail!(
                "attention: queries {:?}, keys {:?} and values {:?} do not fit",
                ql.dims(),
                kl.dims(),
                vl.dims()
            );
        }
        if let Some(mask) = &self.mask
            && mask.len() != nq * nk
        {
            bail!(
                "attention: a mask of {} values for [{nq}, {nk}] scores",
                mask.len()
            );
        }
        let mut out = vec![0f32; b * h * nq * d];
        if nq * d > 0 {
            out.par_chunks_mut(nq * d)
                .zip(q.par_chunks(nq * d))
                .zip(k.par_chunks(nk * d).zip(v.par_chunks(nk * d)))
                .for_each(|((out, q), (k, v))| self.head(q, k, v, out, nk, d));
        }
        Ok((CpuStorage::F32(out), Shape::from((b, h, nq, d))))
    }
}

impl Attention {
    /// One (image, head): `q` `[Nq, D]`, `k` and `v` `[Nk, D]` → `out`
    /// `[Nq, D]`.
    fn head(&self, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], nk: usize, d: usize) {
        if nk == 0 {
            return;
        }
        let keys = Packed::new(k, &vec![0f32; nk], nk, d);
        let values = Packed::from_k_major(v, &vec![0f32; d], d, nk);
        let mut scores = vec![0f32; q.len() / d * nk];
        keys.forward_into(q, &mut scores, Epilogue::Identity);
        if let Some(mask) = &self.mask {
            scores.iter_mut().zip(mask).for_each(|(s, m)| *s += m);
        }
        softmax_rows(&mut scores, nk);
        values.forward_into(&scores, out, Epilogue::Identity);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn matches_candles_three_ops_with_and_without_a_mask() -> Result<()> {
        let dev = Device::Cpu;
        for (b, h, nq, nk, d) in [(2, 3, 5, 5, 8), (1, 2, 37, 37, 64), (2, 1, 1, 9, 16)] {
            let q = Tensor::randn(0f32, 0.5, (b, h, nq, d), &dev)?;
            let k = Tensor::randn(0f32, 0.5, (b, h, nk, d), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (b, h, nk, d), &dev)?;
            let causal: Vec<f32> = (0..nq * nk)
                .map(|i| {
                    if i % nk > i / nk {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            let causal = Tensor::from_vec(causal, (nq, nk), &dev)?;
            for mask in [None, Some(&causal)] {
                let mut scores = q.matmul(&k.t()?)?;
                if let Some(m) = mask {
                    scores = scores.broadcast_add(m)?;
                }
                let want = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
                let got = attention(&q, &k, &v, mask)?;
                assert_eq!(got.dims(), want.dims());
                let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(
                    diff < 1e-5,
                    "{b}x{h}x{nq}x{nk}x{d}, mask {}: {diff}",
                    mask.is_some()
                );
            }
        }
        Ok(())
    }
}
