//! CLIP's image tower. The embedding is transformers'
//! `get_image_features`: the class token after the post layernorm, through
//! the visual projection (not normalised).

use candle_core::{DType, IndexOp, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::{
    config::Config,
    layer::{Layer, activation},
};
use crate::models::{
    encoder::Embed,
    kernels::{
        in_pool,
        linear::Linear,
        norm::{LayerNorm, layer_norm},
    },
    processor::Statistics,
    vit::{Normalise, PatchEmbedding},
};

pub struct ClipVision {
    normalise: Normalise,
    patches: PatchEmbedding,
    class_embedding: Tensor,
    /// `[1, 1 + patches, hidden]`.
    positions: Tensor,
    pre_layernorm: LayerNorm,
    layers: Vec<Layer>,
    post_layernorm: LayerNorm,
    projection: Linear,
}

impl ClipVision {
    /// Builds the image tower from `vb` (a whole `CLIPModel` checkpoint).
    pub fn new(cfg: &Config, vb: VarBuilder, stats: Statistics) -> Result<Self> {
        let v = &cfg.vision_config;
        let act = activation(&v.hidden_act)?;
        let (h, p) = (v.hidden_size, v.patch_size);
        let tower = vb.pp("vision_model");
        let emb = tower.pp("embeddings");
        let positions = (v.image_size / p).pow(2) + 1;
        Ok(Self {
            normalise: Normalise::new(stats.mean, stats.std, vb.device())?,
            patches: PatchEmbedding::new(
                emb.get((h, 3, p, p), "patch_embedding.weight")?,
                Tensor::zeros(h, DType::F32, vb.device())?,
            )?,
            class_embedding: emb.get(h, "class_embedding")?.reshape((1, 1, h))?,
            positions: emb
                .get((positions, h), "position_embedding.weight")?
                .unsqueeze(0)?,
            pre_layernorm: layer_norm(h, v.layer_norm_eps, tower.pp("pre_layrnorm"))?,
            layers: (0..v.num_hidden_layers)
                .map(|i| Layer::load(tower.pp(format!("encoder.layers.{i}")), &v.tower(), act))
                .collect::<Result<_>>()?,
            post_layernorm: layer_norm(h, v.layer_norm_eps, tower.pp("post_layernorm"))?,
            projection: Linear::load_unbiased(vb.pp("visual_projection"), h, cfg.projection_dim)?,
        })
    }
}

impl Embed for ClipVision {
    /// `[B, side, side, 3]` RGB24 → image features `[B, projection_dim]`.
    fn embed(&self, rgb: &Tensor) -> Result<Tensor> {
        in_pool(|| {
            let tokens = self.patches.forward(&self.normalise.forward(rgb)?)?;
            let (b, _, h) = tokens.dims3()?;
            let class = self.class_embedding.broadcast_as((b, 1, h))?;
            let mut x = Tensor::cat(&[&class, &tokens], 1)?.broadcast_add(&self.positions)?;
            x = self.pre_layernorm.forward(&x)?;
            for layer in &self.layers {
                x = layer.forward(&x, None)?;
            }
            let pooled = self.post_layernorm.forward(&x.i((.., 0))?.contiguous()?)?;
            self.projection.forward(&pooled)
        })
    }
}
