//! BLIP's image encoder: a pre-norm ViT (`vision_model.*` in the checkpoint).

use candle_core::{D, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::VisionConfig;
use crate::models::{
    kernels::{
        gemm::Products,
        linear::{Activation, Linear},
        norm::{LayerNorm, layer_norm},
    },
    vit::{Attention, Normalise, PatchEmbedding},
};

/// OpenAI CLIP statistics, which every BLIP image processor uses.
const MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

struct Layer {
    norm1: LayerNorm,
    attention: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &VisionConfig, products: Products) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let lin = |name, i, o, act| Linear::load(vb.pp(name), i, o, act, products);
        Ok(Self {
            norm1: layer_norm(h, eps, vb.pp("layer_norm1"))?,
            attention: Attention::new(
                lin("self_attn.qkv", h, 3 * h, Activation::Identity)?,
                lin("self_attn.projection", h, h, Activation::Identity)?,
                h,
                cfg.num_attention_heads,
            ),
            norm2: layer_norm(h, eps, vb.pp("layer_norm2"))?,
            fc1: lin("mlp.fc1", h, cfg.intermediate_size, Activation::Gelu)?,
            fc2: lin("mlp.fc2", cfg.intermediate_size, h, Activation::Identity)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self
            .attention
            .forward_residual(&self.norm1.forward(x)?, x, None)?;
        self.fc2
            .forward_residual(&self.fc1.forward(&self.norm2.forward(&x)?)?, &x)
    }
}

pub struct VisionModel {
    patches: PatchEmbedding,
    /// Class embedding followed by nothing: `[1, 1, hidden]`.
    class_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<Layer>,
    post_layernorm: LayerNorm,
    normalise: Normalise,
    image_size: usize,
}

impl VisionModel {
    /// `products`: how its dense layers multiply on the CPU.
    pub fn load(vb: VarBuilder, cfg: &VisionConfig, products: Products) -> Result<Self> {
        let (h, p) = (cfg.hidden_size, cfg.patch_size);
        let emb = vb.pp("embeddings");
        let patches = (cfg.image_size / p).pow(2);
        Ok(Self {
            patches: PatchEmbedding::new(
                emb.get((h, 3, p, p), "patch_embedding.weight")?,
                emb.get(h, "patch_embedding.bias")?,
            )?,
            class_embedding: emb.get((1, 1, h), "class_embedding")?,
            position_embedding: emb.get((1, patches + 1, h), "position_embedding")?,
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::load(vb.pp(format!("encoder.layers.{i}")), cfg, products))
                .collect::<Result<_>>()?,
            post_layernorm: layer_norm(h, cfg.layer_norm_eps, vb.pp("post_layernorm"))?,
            normalise: Normalise::new(MEAN, STD, vb.device())?,
            image_size: cfg.image_size,
        })
    }

    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// RGB24 images, `[B, H, W, 3]` u8 at the model's size, normalised as
    /// BlipImageProcessor does after its resize: /255, then CLIP mean/std.
    pub fn normalise(&self, rgb: &Tensor) -> Result<Tensor> {
        self.normalise.forward(rgb)
    }

    /// `[B, H, W, 3]` normalised pixels → image tokens `[B, 1 + patches, hidden]`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let tokens = self.patches.forward(pixels)?;
        let class = self
            .class_embedding
            .broadcast_as((b, 1, tokens.dim(D::Minus1)?))?;
        let mut x = Tensor::cat(&[&class, &tokens], 1)?.broadcast_add(&self.position_embedding)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        self.post_layernorm.forward(&x)
    }
}
