//! `config.json` of a Hugging Face `Dinov2Model` checkpoint. Missing fields
//! take transformers' defaults, as `from_pretrained` does.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub mlp_ratio: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    /// The size the position grid was trained at (518 for the released
    /// checkpoints); inputs of another size get it resized.
    pub image_size: usize,
    pub patch_size: usize,
    pub qkv_bias: bool,
    /// Only ViT-g/14 uses a SwiGLU MLP; not supported here.
    pub use_swiglu_ffn: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            mlp_ratio: 4,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-6,
            image_size: 224,
            patch_size: 16,
            qkv_bias: true,
            use_swiglu_ffn: false,
        }
    }
}

impl Config {
    /// What this implementation cannot run, said before any weight loads.
    pub fn check(&self) -> Result<(), String> {
        if self.use_swiglu_ffn {
            return Err("a SwiGLU MLP (DINOv2 ViT-g) is not supported".into());
        }
        if self.hidden_act != "gelu" {
            return Err(format!(
                "activation {:?} is not supported, only \"gelu\"",
                self.hidden_act
            ));
        }
        if !self.qkv_bias {
            return Err("attention without biases (qkv_bias: false) is not supported".into());
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden size {} does not split into {} heads",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }
}
