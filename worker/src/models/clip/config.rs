//! `config.json` of a Hugging Face `CLIPModel` checkpoint. Missing fields
//! take transformers' defaults, as `from_pretrained` does.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    /// Width of the shared image-text space: the embedding.
    #[serde(default = "projection_dim")]
    pub projection_dim: usize,
    #[serde(default)]
    pub vision_config: VisionConfig,
    #[serde(default)]
    pub text_config: TextConfig,
}

fn projection_dim() -> usize {
    512
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// The longest prompt, in tokens with BOS and EOS.
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// What a transformer layer's shape needs, from either tower.
pub struct Tower {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    pub fn tower(&self) -> Tower {
        Tower {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_attention_heads: self.num_attention_heads,
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}

impl TextConfig {
    pub fn tower(&self) -> Tower {
        Tower {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_attention_heads: self.num_attention_heads,
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}
