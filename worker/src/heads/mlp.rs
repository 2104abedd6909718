//! The head itself: normalise, then one linear layer, or a hidden layer
//! with ReLU and a linear output. Tensor names in `head.safetensors`:
//! `hidden.weight`, `hidden.bias` (when hidden), `out.weight`, `out.bias`.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::spec::Normalisation;

pub struct Mlp {
    hidden: Option<Linear>,
    out: Linear,
    mean: Tensor,
    inv_std: Tensor,
    unit_length: bool,
}

impl Mlp {
    /// Builds the layers from `vb`: trained weights, or the fresh ones
    /// `init` put in a var map.
    pub fn new(
        vb: &VarBuilder,
        dim: usize,
        hidden: usize,
        outputs: usize,
        input: &Normalisation,
    ) -> Result<Self> {
        let device = vb.device();
        let (hidden, width) = match hidden {
            0 => (None, dim),
            h => (Some(candle_nn::linear(dim, h, vb.pp("hidden"))?), h),
        };
        let inv_std: Vec<f32> = input.std.iter().map(|s| 1.0 / s).collect();
        Ok(Self {
            hidden,
            out: candle_nn::linear(width, outputs, vb.pp("out"))?,
            mean: Tensor::from_slice(&input.mean, (1, dim), device)?,
            inv_std: Tensor::from_vec(inv_std, (1, dim), device)?,
            unit_length: input.unit_length,
        })
    }

    /// Fills `varmap` with PyTorch's default `nn.Linear` initialisation
    /// (uniform in ±1/√fan_in), drawn from a seeded generator: the same
    /// seed gives the same head.
    pub fn init(
        varmap: &VarMap,
        dim: usize,
        hidden: usize,
        outputs: usize,
        seed: u64,
        device: &Device,
    ) -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layer = |name: &str, fan_in: usize, fan_out: usize| -> Result<()> {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let mut draw = |n: usize| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let weight = Tensor::from_vec(draw(fan_in * fan_out), (fan_out, fan_in), device)?;
            let bias = Tensor::from_vec(draw(fan_out), fan_out, device)?;
            let mut vars = varmap.data().lock().expect("var map lock");
            vars.insert(format!("{name}.weight"), Var::from_tensor(&weight)?);
            vars.insert(format!("{name}.bias"), Var::from_tensor(&bias)?);
            Ok(())
        };
        match hidden {
            0 => layer("out", dim, outputs),
            h => {
                layer("hidden", dim, h)?;
                layer("out", h, outputs)
            }
        }
    }

    pub fn load(
        path: &std::path::Path,
        dim: usize,
        hidden: usize,
        outputs: usize,
        input: &Normalisation,
        device: &Device,
    ) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::new(&vb, dim, hidden, outputs, input)
    }
}

impl Module for Mlp {
    /// Raw embeddings `(rows, dim)` in, logits or a standardised number out.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.unit_length {
            // Floored as torch's `F.normalize`: a zero row stays zero.
            x.broadcast_div(&x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?)?
        } else {
            x.clone()
        };
        let x = x.broadcast_sub(&self.mean)?.broadcast_mul(&self.inv_std)?;
        let x = match &self.hidden {
            Some(hidden) => hidden.forward(&x)?.relu()?,
            None => x,
        };
        self.out.forward(&x)
    }
}
