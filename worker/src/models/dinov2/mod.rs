//! DINOv2 (Oquab et al., 2023), the self-supervised ViT, for Hugging Face
//! `Dinov2Model` checkpoints such as `facebook/dinov2-small` and `-base`.
//! The embedding is transformers' `pooler_output`: the class token after
//! the final layernorm; `-cls-mean` tasks put the mean of the patch tokens
//! beside it, as Dinov2ForImageClassification's input and DINOv2's linear
//! probes do.
//!
//! Our own rather than candle-transformers' `dinov2`: that one reads the
//! original repo's tensor names, not transformers', and resizes the
//! position grid by nearest neighbour where transformers is bicubic, so its
//! embeddings at 224² differ from the reference.

mod config;

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::VarBuilder;
use schema::TaskSpec;

pub use super::processor::Statistics;
pub use config::Config;

use super::{
    encoder::{Embed, Encoder},
    files::{ModelError, read_config},
    kernels::{
        gemm::Products,
        in_pool,
        linear::{Activation, Linear},
        norm::{LayerNorm, layer_norm},
    },
    processor,
    vit::{Attention, Normalise, PatchEmbedding, resize_positions},
};

/// Files a DINOv2 model directory holds; `preprocessor_config.json` is
/// read too when present.
pub const FILES: &[&str] = &["config.json", "model.safetensors"];

/// ImageNet statistics, BitImageProcessor's for every DINOv2 checkpoint.
const IMAGENET: Statistics = Statistics {
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

struct Layer {
    norm1: LayerNorm,
    /// Its output projection carries layer scale 1.
    attention: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    /// Carries layer scale 2.
    fc2: Linear,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let inner = h * cfg.mlp_ratio;
        let attn = vb.pp("attention");
        let part = |name| {
            Linear::load(
                attn.pp("attention").pp(name),
                h,
                h,
                Activation::Identity,
                Products::F32,
            )
        };
        let qkv = Linear::stack(&[part("query")?, part("key")?, part("value")?])?;
        let output = Linear::load(
            attn.pp("output.dense"),
            h,
            h,
            Activation::Identity,
            Products::F32,
        )?
        .scale_outputs(&vb.get(h, "layer_scale1.lambda1")?)?;
        Ok(Self {
            norm1: layer_norm(h, eps, vb.pp("norm1"))?,
            attention: Attention::new(qkv, output, h, cfg.num_attention_heads),
            norm2: layer_norm(h, eps, vb.pp("norm2"))?,
            fc1: Linear::load(vb.pp("mlp.fc1"), h, inner, Activation::Gelu, Products::F32)?,
            fc2: Linear::load(
                vb.pp("mlp.fc2"),
                inner,
                h,
                Activation::Identity,
                Products::F32,
            )?
            .scale_outputs(&vb.get(h, "layer_scale2.lambda1")?)?,
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

pub struct Dinov2 {
    normalise: Normalise,
    patches: PatchEmbedding,
    class_token: Tensor,
    /// Class position followed by the grid resized to the input's patch
    /// grid: `[1, 1 + patches, hidden]`.
    positions: Tensor,
    layers: Vec<Layer>,
    layernorm: LayerNorm,
    pooling: Pooling,
}

impl Dinov2 {
    /// Builds the model for `side`×`side` inputs from `vb`, named as in a
    /// transformers checkpoint.
    pub fn new(
        cfg: &Config,
        vb: VarBuilder,
        side: usize,
        stats: Statistics,
        pooling: Pooling,
    ) -> Result<Self> {
        let (h, p) = (cfg.hidden_size, cfg.patch_size);
        let emb = vb.pp("embeddings");
        let trained = (cfg.image_size / p).pow(2);
        let table = emb
            .get((1, trained + 1, h), "position_embeddings")?
            .squeeze(0)?;
        let grid = side / p;
        let positions = Tensor::cat(
            &[
                &table.i(..1)?,
                &resize_positions(&table.i(1..)?, grid, grid)?,
            ],
            0,
        )?
        .unsqueeze(0)?;
        Ok(Self {
            normalise: Normalise::new(stats.mean, stats.std, vb.device())?,
            patches: PatchEmbedding::new(
                emb.get((h, 3, p, p), "patch_embeddings.projection.weight")?,
                emb.get(h, "patch_embeddings.projection.bias")?,
            )?,
            class_token: emb.get((1, 1, h), "cls_token")?,
            positions,
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), cfg))
                .collect::<Result<_>>()?,
            layernorm: layer_norm(h, cfg.layer_norm_eps, vb.pp("layernorm"))?,
            pooling,
        })
    }
}

impl Embed for Dinov2 {
    /// `[B, side, side, 3]` RGB24 → the class token after the final
    /// layernorm, `[B, hidden]`, or it and the patch tokens' mean,
    /// `[B, 2 · hidden]`.
    fn embed(&self, rgb: &Tensor) -> Result<Tensor> {
        in_pool(|| {
            let tokens = self.patches.forward(&self.normalise.forward(rgb)?)?;
            let (b, _, h) = tokens.dims3()?;
            let class = self.class_token.broadcast_as((b, 1, h))?;
            let mut x = Tensor::cat(&[&class, &tokens], 1)?.broadcast_add(&self.positions)?;
            for layer in &self.layers {
                x = layer.forward(&x)?;
            }
            match self.pooling {
                // Layernorm is per token: only the class token's is needed.
                Pooling::Class => self.layernorm.forward(&x.i((.., 0))?.contiguous()?),
                Pooling::ClassAndMean => {
                    let x = self.layernorm.forward(&x)?;
                    let mean = x.i((.., 1..))?.mean(1)?;
                    Tensor::cat(&[&x.i((.., 0))?, &mean], 1)
                }
            }
        })
    }
}

/// What one image's embedding is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The class token: `[hidden]`.
    Class,
    /// The class token, then the mean of the patch tokens: `[2 · hidden]`.
    ClassAndMean,
}

impl Pooling {
    /// By the task's name: `embed.dinov2-*-cls-mean` pools both.
    pub fn for_task(task: &str) -> Self {
        if task.ends_with("-cls-mean") {
            Self::ClassAndMean
        } else {
            Self::Class
        }
    }

    fn width(self, hidden: usize) -> usize {
        match self {
            Self::Class => hidden,
            Self::ClassAndMean => 2 * hidden,
        }
    }
}

/// Loads what the worker runs for `embed.dinov2-*` tasks, at the task's
/// input size.
pub fn load(
    name: &str,
    dir: &Path,
    device: &Device,
    spec: &TaskSpec,
) -> std::result::Result<Encoder<Dinov2>, ModelError> {
    let cfg: Config = read_config(dir)?;
    cfg.check().map_err(ModelError::Mismatch)?;
    let side = spec.width as usize;
    if spec.width != spec.height || !side.is_multiple_of(cfg.patch_size) {
        return Err(ModelError::Mismatch(format!(
            "task {} feeds {}x{}, not a square of {}-pixel patches",
            spec.name, spec.width, spec.height, cfg.patch_size
        )));
    }
    let stats = processor::statistics(dir, spec, IMAGENET)?;
    let weights = dir.join("model.safetensors");
    let load = |source| ModelError::Weights {
        path: weights.clone(),
        source,
    };
    let tensors = candle_core::safetensors::load(&weights, device).map_err(load)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    let pooling = Pooling::for_task(spec.name);
    let model = Dinov2::new(&cfg, vb, side, stats, pooling).map_err(load)?;
    Ok(Encoder::new(
        name,
        model,
        pooling.width(cfg.hidden_size),
        side,
        device,
    ))
}
