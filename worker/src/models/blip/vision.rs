//! BLIP's image encoder: a pre-norm ViT (`vision_model.*` in the checkpoint).

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder, layer_norm};

use super::config::VisionConfig;
use crate::models::linear::{Activation, Linear};

/// OpenAI CLIP statistics, which every BLIP image processor uses.
const MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

struct Attention {
    qkv: Linear,
    projection: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let head_dim = h / cfg.num_attention_heads;
        Ok(Self {
            qkv: Linear::load(vb.pp("qkv"), h, 3 * h, Activation::Identity)?,
            projection: Linear::load(vb.pp("projection"), h, h, Activation::Identity)?,
            heads: cfg.num_attention_heads,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, n, 3, self.heads, c / self.heads))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)? * self.scale)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let weights = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
        self.projection.forward(&out)
    }
}

struct Layer {
    norm1: LayerNorm,
    attention: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(Self {
            norm1: layer_norm(h, eps, vb.pp("layer_norm1"))?,
            attention: Attention::load(vb.pp("self_attn"), cfg)?,
            norm2: layer_norm(h, eps, vb.pp("layer_norm2"))?,
            fc1: Linear::load(vb.pp("mlp.fc1"), h, cfg.intermediate_size, Activation::Gelu)?,
            fc2: Linear::load(
                vb.pp("mlp.fc2"),
                cfg.intermediate_size,
                h,
                Activation::Identity,
            )?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.attention.forward(&self.norm1.forward(x)?)?)?;
        let mlp = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&x)?)?)?;
        x + mlp
    }
}

pub struct VisionModel {
    /// Patch convolution as a matrix: `[hidden, 3·patch·patch]`.
    patch_weight: Tensor,
    patch_bias: Tensor,
    /// Class embedding followed by nothing: `[1, 1, hidden]`.
    class_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<Layer>,
    post_layernorm: LayerNorm,
    mean: Tensor,
    std: Tensor,
    patch: usize,
    image_size: usize,
}

impl VisionModel {
    pub fn load(vb: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        let (h, p) = (cfg.hidden_size, cfg.patch_size);
        let emb = vb.pp("embeddings");
        let patches = (cfg.image_size / p).pow(2);
        let patch_weight = emb
            .get((h, 3, p, p), "patch_embedding.weight")?
            .reshape((h, 3 * p * p))?;
        let device = vb.device();
        Ok(Self {
            patch_weight,
            patch_bias: emb.get(h, "patch_embedding.bias")?,
            class_embedding: emb.get((1, 1, h), "class_embedding")?,
            position_embedding: emb.get((1, patches + 1, h), "position_embedding")?,
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::load(vb.pp(format!("encoder.layers.{i}")), cfg))
                .collect::<Result<_>>()?,
            post_layernorm: layer_norm(h, cfg.layer_norm_eps, vb.pp("post_layernorm"))?,
            mean: Tensor::new(&MEAN, device)?,
            std: Tensor::new(&STD, device)?,
            patch: p,
            image_size: cfg.image_size,
        })
    }

    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// RGB24 images, `[B, H, W, 3]` u8 at the model's size, normalised as
    /// BlipImageProcessor does after its resize: /255, then CLIP mean/std.
    pub fn normalise(&self, rgb: &Tensor) -> Result<Tensor> {
        (rgb.to_dtype(DType::F32)? * (1.0 / 255.0))?
            .broadcast_sub(&self.mean)?
            .broadcast_div(&self.std)
    }

    /// `[B, H, W, 3]` normalised pixels → image tokens `[B, 1 + patches, hidden]`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, height, width, _) = pixels.dims4()?;
        let (p, gh, gw) = (self.patch, height / self.patch, width / self.patch);
        // Stride-p convolution = matmul over non-overlapping patches, each
        // flattened channel-major like the conv kernel.
        let patches = pixels
            .reshape((b * gh, p, gw, p, 3))?
            .permute((0, 2, 4, 1, 3))?
            .reshape((b * gh * gw, 3 * p * p))?;
        let tokens = patches
            .matmul(&self.patch_weight.t()?)?
            .broadcast_add(&self.patch_bias)?
            .reshape((b, gh * gw, ()))?;
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
