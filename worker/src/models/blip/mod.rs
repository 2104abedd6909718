//! BLIP captioning (Li et al., 2022) for Hugging Face
//! `BlipForConditionalGeneration` checkpoints such as
//! `Salesforce/blip-image-captioning-base` and `-large`.

mod config;
mod generate;
mod text;
mod vision;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

pub use config::{Config, TextConfig, VisionConfig};
pub use generate::{Limits, Specials, generate};
pub use text::{ImageContext, TextDecoder};
pub use vision::VisionModel;

use super::{
    Images, Model, Outputs,
    files::{ModelError, read_config},
    kernels::{gemm::Products, in_pool, linear::precision},
};

/// Files a BLIP model directory holds.
pub const FILES: &[&str] = &["config.json", "model.safetensors", "tokenizer.json"];

/// The two halves of a checkpoint.
pub struct Blip {
    pub vision: VisionModel,
    pub decoder: TextDecoder,
    pub specials: Specials,
}

impl Blip {
    /// In `dtype`, whatever the checkpoint's own.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        let cfg = read_config::<Config>(dir)?
            .resolve()
            .map_err(ModelError::Mismatch)?;
        let weights = dir.join("model.safetensors");
        let load = |source| ModelError::Weights {
            path: weights.clone(),
            source,
        };
        let tensors = candle_core::safetensors::load(&weights, device).map_err(load)?;
        let (dtype, products) = precision(device, dtype);
        Self::new(
            &cfg,
            VarBuilder::from_tensors(tensors, dtype, device),
            products,
        )
        .map_err(load)
    }

    /// Builds the model from `vb`, named as in a transformers checkpoint,
    /// its dense layers multiplying as `products` says on the CPU. `cfg`
    /// must be resolved.
    pub fn new(cfg: &Config, vb: VarBuilder, products: Products) -> candle_core::Result<Self> {
        let t = &cfg.text_config;
        Ok(Self {
            vision: VisionModel::load(vb.pp("vision_model"), &cfg.vision_config, products)?,
            decoder: TextDecoder::load(vb.pp("text_decoder"), t, products)?,
            specials: Specials {
                bos: t.bos_token_id,
                sep: t.sep_token_id,
                pad: t.pad_token_id,
            },
        })
    }

    /// Captions `[B, H, W, 3]` RGB24 images at the model's size.
    pub fn caption(
        &self,
        rgb: &Tensor,
        prompt: &[u32],
        limits: Limits,
    ) -> candle_core::Result<Vec<Vec<u32>>> {
        in_pool(|| {
            let image_embeds = self.vision.forward(&self.vision.normalise(rgb)?)?;
            generate(&self.decoder, &image_embeds, prompt, self.specials, limits)
        })
    }
}

/// What the worker runs for `caption.*` tasks: the model, its tokenizer and
/// the prompt every caption starts with.
pub struct Captioner {
    name: String,
    blip: Blip,
    tokenizer: Tokenizer,
    prompt: Vec<u32>,
    limits: Limits,
    device: Device,
}

/// One caption: the text (prompt included, as transformers decodes it) and
/// the generated ids after the prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Caption {
    pub caption: String,
    pub token_ids: Vec<u32>,
}

impl Captioner {
    pub fn load(
        name: &str,
        dir: &Path,
        device: &Device,
        prompt: &str,
        limits: Limits,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        let blip = Blip::load(dir, device, dtype)?;
        let path = dir.join("tokenizer.json");
        let unusable =
            |e| ModelError::Mismatch(format!("{} is not a usable tokenizer: {e}", path.display()));
        let mut tokenizer = Tokenizer::from_file(&path).map_err(unusable)?;
        // A checkpoint's tokenizer.json may carry the padding and truncation
        // it was trained with; transformers ignores both when it tokenizes a
        // generation prompt, and a prompt padded to a fixed length would not
        // fit the decoder's positions.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(unusable)?;
        let prompt = tokenizer
            .encode(prompt, false)
            .map_err(|e| ModelError::Mismatch(format!("cannot tokenize the prompt: {e}")))?
            .get_ids()
            .to_vec();
        // Checked at load so that a bad flag stops the worker at start
        // instead of failing every batch.
        blip.decoder
            .check_fits(prompt.len(), limits.max_tokens)
            .map_err(|e| ModelError::Mismatch(e.to_string()))?;
        Ok(Self {
            name: name.to_owned(),
            blip,
            tokenizer,
            prompt,
            limits,
            device: device.clone(),
        })
    }

    /// Side of the square images the model reads.
    pub fn image_size(&self) -> usize {
        self.blip.vision.image_size()
    }

    pub fn caption(&self, images: Images<'_>) -> candle_core::Result<Vec<Caption>> {
        let rgb = Tensor::from_slice(
            images.pixels,
            (images.count, images.height, images.width, 3),
            &Device::Cpu,
        )?
        .to_device(&self.device)?;
        let generated = self.blip.caption(&rgb, &self.prompt, self.limits)?;
        generated
            .into_iter()
            .map(|token_ids| {
                let all: Vec<u32> = self.prompt.iter().chain(&token_ids).copied().collect();
                let caption = self.tokenizer.decode(&all, true).map_err(|e| {
                    candle_core::Error::Msg(format!("cannot decode a caption: {e}"))
                })?;
                Ok(Caption { caption, token_ids })
            })
            .collect()
    }
}

impl Model for Captioner {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_size(&self) -> (usize, usize) {
        (self.image_size(), self.image_size())
    }

    fn embedding_dim(&self) -> usize {
        0
    }

    fn infer(&self, images: Images<'_>) -> candle_core::Result<Outputs> {
        Ok(Outputs {
            captions: self
                .caption(images)?
                .into_iter()
                .map(|c| c.caption)
                .collect(),
            ..Outputs::default()
        })
    }
}
