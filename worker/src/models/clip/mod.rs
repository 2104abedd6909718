//! CLIP's image tower (Radford et al., 2021) for Hugging Face `CLIPModel`
//! checkpoints such as `openai/clip-vit-base-patch32`. The embedding is
//! transformers' `get_image_features`: the class token after the post
//! layernorm, through the visual projection (not normalised).
//!
//! Our own rather than candle-transformers' `clip` (which reads the same
//! names): it runs on the kernels every encoder here shares (`vit.rs`;
//! `kernels/linear.rs`: one GEMM over all tokens and a fused, parallel bias +
//! activation, where candle-nn's `Linear` and activations took a quarter of
//! a BLIP layer in single-threaded passes), and it takes the producer's
//! NHWC frames without a transpose.

mod config;

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, bail};
use candle_nn::{LayerNorm, VarBuilder, layer_norm};
use schema::TaskSpec;

pub use config::{Config, VisionConfig};

use super::{
    encoder::{Embed, Encoder},
    files::{ModelError, read_config},
    kernels::linear::{Activation, Linear},
    processor::{self, Statistics},
    vit::{Attention, Normalise, PatchEmbedding},
};

/// Files a CLIP model directory holds; `preprocessor_config.json` is read
/// too when present.
pub const FILES: &[&str] = &["config.json", "model.safetensors"];

/// OpenAI's statistics, CLIPImageProcessor's defaults.
const OPENAI: Statistics = Statistics {
    mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
    std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
};

struct Layer {
    norm1: LayerNorm,
    attention: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &VisionConfig, act: Activation) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let attn = vb.pp("self_attn");
        let part = |name| Linear::load(attn.pp(name), h, h, Activation::Identity);
        Ok(Self {
            norm1: layer_norm(h, eps, vb.pp("layer_norm1"))?,
            attention: Attention::new(
                Linear::stack(&[part("q_proj")?, part("k_proj")?, part("v_proj")?])?,
                part("out_proj")?,
                h,
                cfg.num_attention_heads,
            ),
            norm2: layer_norm(h, eps, vb.pp("layer_norm2"))?,
            fc1: Linear::load(vb.pp("mlp.fc1"), h, cfg.intermediate_size, act)?,
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
        let act = match v.hidden_act.as_str() {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => bail!("activation {other:?} is not supported"),
        };
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
                .map(|i| Layer::load(tower.pp(format!("encoder.layers.{i}")), v, act))
                .collect::<Result<_>>()?,
            post_layernorm: layer_norm(h, v.layer_norm_eps, tower.pp("post_layernorm"))?,
            projection: Linear::load_unbiased(vb.pp("visual_projection"), h, cfg.projection_dim)?,
        })
    }
}

impl Embed for ClipVision {
    /// `[B, side, side, 3]` RGB24 → image features `[B, projection_dim]`.
    fn embed(&self, rgb: &Tensor) -> Result<Tensor> {
        let tokens = self.patches.forward(&self.normalise.forward(rgb)?)?;
        let (b, _, h) = tokens.dims3()?;
        let class = self.class_embedding.broadcast_as((b, 1, h))?;
        let mut x = Tensor::cat(&[&class, &tokens], 1)?.broadcast_add(&self.positions)?;
        x = self.pre_layernorm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        let pooled = self.post_layernorm.forward(&x.i((.., 0))?.contiguous()?)?;
        self.projection.forward(&pooled)
    }
}

/// Loads what the worker runs for `embed.clip-*` tasks.
pub fn load(
    name: &str,
    dir: &Path,
    device: &Device,
    spec: &TaskSpec,
) -> std::result::Result<Encoder<ClipVision>, ModelError> {
    let cfg: Config = read_config(dir)?;
    let side = cfg.vision_config.image_size;
    if (spec.width as usize, spec.height as usize) != (side, side) {
        return Err(ModelError::Mismatch(format!(
            "the checkpoint reads {side}x{side}, task {} feeds {}x{}",
            spec.name, spec.width, spec.height
        )));
    }
    let stats = processor::statistics(dir, spec, OPENAI)?;
    let weights = dir.join("model.safetensors");
    let load = |source| ModelError::Weights {
        path: weights.clone(),
        source,
    };
    let tensors = candle_core::safetensors::load(&weights, device).map_err(load)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    let model = ClipVision::new(&cfg, vb, stats).map_err(load)?;
    Ok(Encoder::new(name, model, cfg.projection_dim, side, device))
}
