use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

mod classifier;
pub mod lite;

use classifier::Classifier;
use lite::{Config, EfficientNetLite};

use super::{
    Images, Model, Outputs,
    files::{ModelError, read_config, read_labels},
};

const TOP_K: usize = 5;

/// EfficientNet-Lite trunk plus its ImageNet classifier as the first head.
pub struct EffnetEncoder {
    name: String,
    model: EfficientNetLite,
    classifier: Classifier,
    dim: usize,
    size: usize,
    device: Device,
}

impl EffnetEncoder {
    pub const FILES: &'static [&'static str] = &["config.json", "model.safetensors", "labels.txt"];

    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let cfg: Config = read_config(dir)?;
        let labels = read_labels(dir)?;
        if labels.len() != cfg.num_classes {
            return Err(ModelError::Mismatch(format!(
                "labels.txt has {} classes, config.json says {}",
                labels.len(),
                cfg.num_classes
            )));
        }
        let weights = dir.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&weights, device).map_err(|source| {
            ModelError::Weights {
                path: weights.clone(),
                source,
            }
        })?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let load = |source| ModelError::Weights {
            path: weights.clone(),
            source,
        };
        let model = EfficientNetLite::new(&cfg, vb.clone()).map_err(load)?;
        let classifier =
            Classifier::new(vb.pp("_fc"), cfg.head_channels, labels, TOP_K).map_err(load)?;
        Ok(Self {
            name: cfg.architecture.clone(),
            model,
            classifier,
            dim: cfg.head_channels,
            size: cfg.image_size,
            device: device.clone(),
        })
    }
}

impl Model for EffnetEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn embedding_dim(&self) -> usize {
        self.dim
    }

    fn input_size(&self) -> (usize, usize) {
        (self.size, self.size)
    }

    fn infer(&self, images: Images<'_>) -> candle_core::Result<Outputs> {
        let input = Tensor::from_slice(
            images.pixels,
            (images.count, images.height, images.width, 3),
            &Device::Cpu,
        )?
        .to_device(&self.device)?;
        let embeddings = self.model.embed(&input)?;
        let labels = self.classifier.top_k(&embeddings)?;
        Ok(Outputs {
            dim: self.dim,
            embeddings: embeddings.flatten_all()?.to_vec1::<f32>()?,
            labels,
            ..Outputs::default()
        })
    }
}
