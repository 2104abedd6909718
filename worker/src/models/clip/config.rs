//! `config.json` of a Hugging Face `CLIPModel` checkpoint: the image tower's
//! part. Missing fields take transformers' defaults, as `from_pretrained`
//! does.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    /// Width of the shared image-text space: the embedding.
    #[serde(default = "projection_dim")]
    pub projection_dim: usize,
    #[serde(default)]
    pub vision_config: VisionConfig,
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
