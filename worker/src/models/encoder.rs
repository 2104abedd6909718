//! An image encoder (RGB24 in, one embedding per image out) as the engine's
//! `Model`: the part every embedding family shares.

use candle_core::{D, Device, Result, Tensor};

use super::{Images, Model, Outputs};

/// A family's network: `[B, side, side, 3]` RGB24 → `[B, dim]`.
pub trait Embed: Send {
    fn embed(&self, rgb: &Tensor) -> Result<Tensor>;
}

pub struct Encoder<E> {
    name: String,
    model: E,
    dim: usize,
    side: usize,
    device: Device,
}

impl<E: Embed> Encoder<E> {
    pub fn new(name: &str, model: E, dim: usize, side: usize, device: &Device) -> Self {
        Self {
            name: name.to_owned(),
            model,
            dim,
            side,
            device: device.clone(),
        }
    }
}

impl<E: Embed> Model for Encoder<E> {
    fn name(&self) -> &str {
        &self.name
    }

    fn embedding_dim(&self) -> usize {
        self.dim
    }

    fn input_size(&self) -> (usize, usize) {
        (self.side, self.side)
    }

    fn infer(&self, images: Images<'_>) -> Result<Outputs> {
        let input = Tensor::from_slice(
            images.pixels,
            (images.count, images.height, images.width, 3),
            &Device::Cpu,
        )?
        .to_device(&self.device)?;
        let embeddings = self.model.embed(&input)?;
        Ok(Outputs {
            dim: embeddings.dim(D::Minus1)?,
            embeddings: embeddings.flatten_all()?.to_vec1::<f32>()?,
            ..Outputs::default()
        })
    }
}
