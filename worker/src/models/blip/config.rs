//! `config.json` of a Hugging Face `BlipForConditionalGeneration` checkpoint.
//! Missing fields take transformers' defaults, as `from_pretrained` does.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub vision_config: VisionConfig,
    #[serde(default)]
    pub text_config: TextConfig,
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
            image_size: 384,
            patch_size: 16,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of the image tokens the cross-attention reads.
    pub encoder_hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    /// `[DEC]`: replaces `[CLS]` at the start of every caption.
    pub bos_token_id: u32,
    /// `[SEP]`: ends a caption.
    pub sep_token_id: u32,
    pub pad_token_id: u32,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 30524,
            hidden_size: 768,
            encoder_hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 512,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-12,
            bos_token_id: 30522,
            sep_token_id: 102,
            pad_token_id: 0,
        }
    }
}

impl Config {
    /// Applies transformers' cross-field rules and rejects what the model
    /// code does not implement, before any weight loads.
    pub fn resolve(mut self) -> Result<Self, String> {
        // BlipConfig overrides the stored value with the vision width.
        self.text_config.encoder_hidden_size = self.vision_config.hidden_size;
        let (v, t) = (&self.vision_config, &self.text_config);
        for (part, act) in [("vision", &v.hidden_act), ("text", &t.hidden_act)] {
            if act != "gelu" {
                return Err(format!(
                    "{part} hidden_act {act:?} is not supported (only \"gelu\")"
                ));
            }
        }
        if v.hidden_size % v.num_attention_heads != 0 || t.hidden_size % t.num_attention_heads != 0
        {
            return Err("hidden_size must be a multiple of num_attention_heads".into());
        }
        if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
            return Err(format!(
                "image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_transformers_defaults_and_cross_width_follows_vision() {
        let cfg: Config = serde_json::from_str(
            r#"{"vision_config": {"hidden_size": 1024, "num_attention_heads": 16},
                "text_config": {"encoder_hidden_size": 768}}"#,
        )
        .map_err(|e| e.to_string())
        .and_then(Config::resolve)
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.text_config.encoder_hidden_size, 1024);
        assert_eq!(cfg.text_config.num_attention_heads, 8);
        assert_eq!(cfg.text_config.bos_token_id, 30522);
        assert_eq!(cfg.vision_config.image_size, 384);
    }

    #[test]
    fn unsupported_configs_are_refused() {
        let refused = |json: &str| {
            serde_json::from_str::<Config>(json)
                .map_err(|e| e.to_string())
                .and_then(Config::resolve)
                .err()
        };
        let act = refused(r#"{"text_config": {"hidden_act": "relu"}}"#);
        assert!(act.is_some_and(|e| e.contains("relu")));
        assert!(refused(r#"{"vision_config": {"patch_size": 10}}"#).is_some());
        assert!(refused(r#"{"text_config": {"num_attention_heads": 7}}"#).is_some());
    }
}
