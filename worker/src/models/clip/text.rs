//! CLIP's text tower: transformers' `get_text_features`, the token at the
//! first `<|endoftext|>` after the final layernorm, through the text
//! projection (not normalised). Zero-shot heads are built from it.
//!
//! Prompts run one at a time, unpadded: a head is built once from a few
//! labels, so batching would buy nothing, and without padding there is no
//! padding mask to get wrong. Causal attention means the tokens after EOS,
//! which a padded batch would add, could not change the result anyway.

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, bail};
use candle_nn::{Embedding, VarBuilder};
use tokenizers::Tokenizer;

use super::{
    config::Config,
    layer::{Layer, activation},
};
use crate::models::{
    files::{ModelError, read_config},
    kernels::{
        linear::Linear,
        norm::{LayerNorm, layer_norm},
    },
};

/// The token CLIP ends every prompt with and pools at.
const EOS: &str = "<|endoftext|>";

pub struct ClipText {
    tokens: Embedding,
    /// `[max_positions, hidden]`.
    positions: Tensor,
    layers: Vec<Layer>,
    final_layer_norm: LayerNorm,
    projection: Linear,
    vocab: usize,
}

impl ClipText {
    /// Builds the text tower from `vb` (a whole `CLIPModel` checkpoint).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let t = &cfg.text_config;
        let act = activation(&t.hidden_act)?;
        let h = t.hidden_size;
        let tower = vb.pp("text_model");
        let emb = tower.pp("embeddings");
        Ok(Self {
            tokens: Embedding::new(emb.get((t.vocab_size, h), "token_embedding.weight")?, h),
            positions: emb.get((t.max_position_embeddings, h), "position_embedding.weight")?,
            layers: (0..t.num_hidden_layers)
                .map(|i| Layer::load(tower.pp(format!("encoder.layers.{i}")), &t.tower(), act))
                .collect::<Result<_>>()?,
            final_layer_norm: layer_norm(h, t.layer_norm_eps, tower.pp("final_layer_norm"))?,
            projection: Linear::load_unbiased(vb.pp("text_projection"), h, cfg.projection_dim)?,
            vocab: t.vocab_size,
        })
    }

    /// The longest prompt it reads, in tokens.
    pub fn max_tokens(&self) -> usize {
        self.positions.dims()[0]
    }

    /// One prompt's ids (BOS … EOS, unpadded) → its features
    /// `[projection_dim]`, pooled at the first `eos`.
    pub fn embed(&self, ids: &[u32], eos: u32) -> Result<Tensor> {
        let n = ids.len();
        if n > self.max_tokens() {
            bail!(
                "{n} tokens; the text tower reads at most {}",
                self.max_tokens()
            );
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            bail!(
                "token id {bad} is outside the model's {} tokens",
                self.vocab
            );
        }
        let Some(pool) = ids.iter().position(|&id| id == eos) else {
            bail!("the prompt has no end-of-text token to pool at");
        };
        let device = self.positions.device();
        let mut x = self
            .tokens
            .forward(&Tensor::new(ids, device)?)?
            .add(&self.positions.narrow(0, 0, n)?)?
            .unsqueeze(0)?;
        let mask = causal_mask(n, device)?;
        for layer in &self.layers {
            x = layer.forward(&x, Some(&mask))?;
        }
        let pooled = self
            .final_layer_norm
            .forward(&x.i((.., pool..=pool))?.contiguous()?)?;
        self.projection.forward(&pooled.squeeze(1)?)?.squeeze(0)
    }
}

/// `[n, n]`: 0 where a token may attend (itself and earlier), −∞ after.
fn causal_mask(n: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (n, n), device)
}

/// The text tower with its tokenizer and CLIP's learned logit scale: what
/// turns label prompts into a zero-shot head.
pub struct TextEncoder {
    tower: ClipText,
    tokenizer: Tokenizer,
    eos: u32,
    /// `exp(logit_scale)`: the factor on cosine similarity in CLIP's logits.
    pub logit_scale: f32,
    pub dim: usize,
}

impl TextEncoder {
    pub fn load(dir: &Path, device: &Device) -> std::result::Result<Self, ModelError> {
        let cfg: Config = read_config(dir)?;
        let weights = dir.join("model.safetensors");
        let load = |source| ModelError::Weights {
            path: weights.clone(),
            source,
        };
        let tensors = candle_core::safetensors::load(&weights, device).map_err(load)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let tower = ClipText::new(&cfg, vb.clone()).map_err(load)?;
        let logit_scale = vb
            .get((), "logit_scale")
            .and_then(|s| s.exp()?.to_scalar::<f32>())
            .map_err(load)?;
        let path = dir.join("tokenizer.json");
        let unusable =
            |e| ModelError::Mismatch(format!("{} is not a usable tokenizer: {e}", path.display()));
        let mut tokenizer = Tokenizer::from_file(&path).map_err(unusable)?;
        // Unpadded and untruncated: a prompt too long for the tower is
        // refused rather than cut to a different meaning.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(unusable)?;
        let eos = tokenizer.token_to_id(EOS).ok_or_else(|| {
            ModelError::Mismatch(format!("{} has no {EOS} token", path.display()))
        })?;
        Ok(Self {
            tower,
            tokenizer,
            eos,
            logit_scale,
            dim: cfg.projection_dim,
        })
    }

    /// Token ids of `text` as the tower reads them, BOS and EOS included.
    pub fn tokenize(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| anyhow::anyhow!("cannot tokenize {text:?}: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text features of `text`: `[projection_dim]`, as `get_text_features`.
    pub fn features(&self, text: &str) -> anyhow::Result<Vec<f32>> {
        let ids = self.tokenize(text)?;
        let features = self
            .tower
            .embed(&ids, self.eos)
            .and_then(|f| f.to_dtype(DType::F32)?.to_vec1::<f32>())
            .map_err(|e| anyhow::anyhow!("prompt {text:?}: {e}"))?;
        Ok(features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_hides_only_later_tokens() -> Result<()> {
        let mask = causal_mask(3, &Device::Cpu)?.to_vec2::<f32>()?;
        for (i, row) in mask.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(v == 0.0, j <= i, "({i}, {j}) = {v}");
            }
        }
        assert_eq!(mask[0][1], f32::NEG_INFINITY);
        Ok(())
    }
}
