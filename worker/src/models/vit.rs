//! Pieces every transformer here shares (BLIP's image encoder, DINOv2,
//! CLIP's two towers): pixel normalisation, patch embedding, multi-head
//! attention, and resizing a learned position grid to the input's patch
//! grid.

use candle_core::{DType, Device, Module, Result, Tensor, bail};

use super::kernels::{attention::self_attention, linear::Linear};

/// A Hugging Face image processor's last steps, on `[B, H, W, 3]` RGB24
/// already at the model's size: rescale by 1/255, then per-channel
/// `(x - mean) / std`.
pub struct Normalise {
    mean: Tensor,
    std: Tensor,
}

impl Normalise {
    pub fn new(mean: [f32; 3], std: [f32; 3], device: &Device) -> Result<Self> {
        Ok(Self {
            mean: Tensor::new(&mean, device)?,
            std: Tensor::new(&std, device)?,
        })
    }

    pub fn forward(&self, rgb: &Tensor) -> Result<Tensor> {
        (rgb.to_dtype(DType::F32)? * (1.0 / 255.0))?
            .broadcast_sub(&self.mean)?
            .broadcast_div(&self.std)
    }
}

/// A stride-`patch` convolution as one matmul over non-overlapping patches.
pub struct PatchEmbedding {
    /// `[hidden, 3·patch·patch]`, flattened channel-major like the conv kernel.
    weight: Tensor,
    bias: Tensor,
    patch: usize,
}

impl PatchEmbedding {
    /// From a conv2d's `weight` `[hidden, 3, patch, patch]` and `bias`.
    pub fn new(weight: Tensor, bias: Tensor) -> Result<Self> {
        let (hidden, channels, patch, width) = weight.dims4()?;
        if channels != 3 || patch != width {
            bail!("patch embedding {:?} is not an RGB square", weight.dims());
        }
        Ok(Self {
            weight: weight.reshape((hidden, 3 * patch * patch))?,
            bias,
            patch,
        })
    }

    /// `[B, H, W, 3]` normalised pixels → `[B, (H/p)·(W/p), hidden]`, rows
    /// first, as a conv's output flattened.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, height, width, _) = pixels.dims4()?;
        let (p, gh, gw) = (self.patch, height / self.patch, width / self.patch);
        // Normalised pixels are f32; a half-precision model takes them in its own.
        let patches = pixels
            .to_dtype(self.weight.dtype())?
            .reshape((b * gh, p, gw, p, 3))?
            .permute((0, 2, 4, 1, 3))?
            .reshape((b * gh * gw, 3 * p * p))?;
        patches
            .matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)?
            .reshape((b, gh * gw, ()))
    }
}

/// Self-attention with query, key and value as one GEMM.
pub struct Attention {
    qkv: Linear,
    output: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    pub fn new(qkv: Linear, output: Linear, hidden: usize, heads: usize) -> Self {
        Self {
            qkv,
            output,
            heads,
            scale: ((hidden / heads) as f64).powf(-0.5),
        }
    }

    /// The attention of (normalised) `x` plus `residual`, the block's skip
    /// connection; `mask` `[n, n]` is added to the scores (−∞ hides a key).
    pub fn forward_residual(
        &self,
        x: &Tensor,
        residual: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        self.output.forward_residual(
            &self_attention(&qkv, self.heads, self.scale, mask, self.qkv.products())?,
            residual,
        )
    }
}

/// A learned `[side·side, dim]` position grid resized to `rows`×`cols`
/// as PyTorch's `interpolate(mode="bicubic", align_corners=False)` does
/// (Keys' cubic with a = -0.75, edges clamped), which is what transformers
/// runs when the input's patch grid differs from the checkpoint's.
pub fn resize_positions(grid: &Tensor, rows: usize, cols: usize) -> Result<Tensor> {
    let (count, dim) = grid.dims2()?;
    let side = count.isqrt();
    if side * side != count {
        bail!("{count} position embeddings are not a square grid");
    }
    if (rows, cols) == (side, side) {
        return Ok(grid.clone());
    }
    let values = grid.to_vec2::<f32>()?;
    let taps_y = cubic_taps(side, rows);
    let taps_x = cubic_taps(side, cols);
    let mut out = vec![0f32; rows * cols * dim];
    for (oy, ty) in taps_y.iter().enumerate() {
        for (ox, tx) in taps_x.iter().enumerate() {
            let dst = &mut out[(oy * cols + ox) * dim..][..dim];
            for &(iy, wy) in ty {
                for &(ix, wx) in tx {
                    let w = wy * wx;
                    for (d, s) in dst.iter_mut().zip(&values[iy * side + ix]) {
                        *d += w * s;
                    }
                }
            }
        }
    }
    Tensor::from_vec(out, (rows * cols, dim), &Device::Cpu)?.to_device(grid.device())
}

/// For each of `dst` outputs along one axis, its four source indices
/// (clamped) and weights.
fn cubic_taps(src: usize, dst: usize) -> Vec<[(usize, f32); 4]> {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = src as f32 / dst as f32;
    (0..dst)
        .map(|o| {
            let real = scale * (o as f32 + 0.5) - 0.5;
            let base = real.floor();
            let t = real - base;
            let weights = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
            std::array::from_fn(|k| {
                let i = (base as isize + k as isize - 1).clamp(0, src as isize - 1);
                (i as usize, weights[k])
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_size_is_the_same_grid() -> Result<()> {
        let grid = Tensor::arange(0f32, 18.0, &Device::Cpu)?.reshape((9, 2))?;
        let same = resize_positions(&grid, 3, 3)?;
        assert_eq!(same.to_vec2::<f32>()?, grid.to_vec2::<f32>()?);
        Ok(())
    }

    #[test]
    fn cubic_weights_sum_to_one_and_keep_a_constant() -> Result<()> {
        for taps in cubic_taps(37, 16).iter().chain(&cubic_taps(5, 11)) {
            let sum: f32 = taps.iter().map(|t| t.1).sum();
            assert!((sum - 1.0).abs() < 1e-6, "{taps:?}");
        }
        let grid = Tensor::full(0.25f32, (25, 3), &Device::Cpu)?;
        let resized = resize_positions(&grid, 4, 7)?;
        assert_eq!(resized.dims(), &[28, 3]);
        for v in resized.flatten_all()?.to_vec1::<f32>()? {
            assert!((v - 0.25).abs() < 1e-6);
        }
        Ok(())
    }
}
