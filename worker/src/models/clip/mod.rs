//! CLIP (Radford et al., 2021) for Hugging Face `CLIPModel` checkpoints
//! such as `openai/clip-vit-base-patch32`: the image tower embeds frames
//! (`embed.clip-*` tasks); the text tower turns label prompts into
//! zero-shot heads.
//!
//! Our own rather than candle-transformers' `clip` (which reads the same
//! names): it runs on the kernels every encoder here shares (`vit.rs`;
//! `kernels/linear.rs`: one GEMM over all tokens and a fused, parallel bias +
//! activation, where candle-nn's `Linear` and activations took a quarter of
//! a BLIP layer in single-threaded passes), and it takes the producer's
//! NHWC frames without a transpose.

mod config;
mod layer;
mod text;
mod vision;

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use schema::TaskSpec;

pub use config::{Config, TextConfig, VisionConfig};
pub use text::TextEncoder;
pub use vision::ClipVision;

use super::{
    encoder::Encoder,
    files::{ModelError, read_config},
    processor::{self, Statistics},
};

/// Files a CLIP model directory holds; `preprocessor_config.json` is read
/// too when present.
pub const FILES: &[&str] = &["config.json", "model.safetensors"];

/// What building a zero-shot head reads.
pub const TEXT_FILES: &[&str] = &["config.json", "model.safetensors", "tokenizer.json"];

/// OpenAI's statistics, CLIPImageProcessor's defaults.
const OPENAI: Statistics = Statistics {
    mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
    std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
};

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
