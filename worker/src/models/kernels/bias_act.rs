//! Per-channel bias plus optional ReLU6 in one pass.
//!
//! In candle, `broadcast_add` of a [C] bias and `clamp` (a maximum and a
//! minimum against broadcast scalars) are three passes over the activation
//! through its generic strided paths; on CPU they cost more than the
//! convolutions of EfficientNet-Lite. Other devices use those ops.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// `x`: [B, C, H, W]; `bias`: [C]. Returns `x + bias`, clamped to [0, 6] if `relu6`.
pub fn bias_act(x: &Tensor, bias: &Tensor, relu6: bool) -> Result<Tensor> {
    if x.device().is_cpu() {
        return x.apply_op2_no_bwd(bias, &BiasAct { relu6 });
    }
    let y = x.broadcast_add(&bias.reshape((1, (), 1, 1))?)?;
    if relu6 { y.clamp(0f32, 6f32) } else { Ok(y) }
}

struct BiasAct {
    relu6: bool,
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(b)) = (xs, bs) else {
            bail!("bias-act supports f32 only");
        };
        let (Some((x0, x1)), Some((b0, b1))) = (xl.contiguous_offsets(), bl.contiguous_offsets())
        else {
            bail!("bias-act needs contiguous inputs");
        };
        let (x, b) = (&x[x0..x1], &b[b0..b1]);
        let &[_, c, h, w] = xl.dims() else {
            bail!("bias-act input must be 4-D, got {:?}", xl.dims());
        };
        if b.len() != c {
            bail!("bias-act bias has {} values for {c} channels", b.len());
        }
        let plane = h * w;
        let mut out = vec![0f32; x.len()];
        let relu6 = self.relu6;
        out.par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .with_min_len(8)
            .enumerate()
            .for_each(|(i, (dst, src))| {
                let bias = b[i % c];
                if relu6 {
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d = (s + bias).clamp(0.0, 6.0);
                    }
                } else {
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d = s + bias;
                    }
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn matches_broadcast_add_and_clamp() -> Result<()> {
        let x = Tensor::randn(0f32, 4.0, (2, 3, 4, 5), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 4.0, 3, &Device::Cpu)?;
        let added = x.broadcast_add(&b.reshape((1, 3, 1, 1))?)?;
        for (relu6, expected) in [(false, added.clone()), (true, added.clamp(0f32, 6f32)?)] {
            let diff = (bias_act(&x, &b, relu6)? - expected)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-6, "relu6={relu6}: max diff {diff}");
        }
        Ok(())
    }
}
