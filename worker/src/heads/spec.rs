//! `head.json`: what a head reads, what it says, and where it came from:
//! how it was trained and how well it did on data it never saw, or which
//! prompts a zero-shot head was built from. Written beside
//! `head.safetensors`.

use serde::{Deserialize, Serialize};

/// What this build writes. `/2` added unit-length inputs and zero-shot
/// heads; a `/1` reader refuses a `/2` head rather than skip a step.
pub const FORMAT: &str = "framefleet-head/2";
/// What this build reads.
pub const READABLE: &[&str] = &["framefleet-head/1", FORMAT];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeadSpec {
    pub format: String,
    pub name: String,
    pub encoder: Encoder,
    pub target: Target,
    /// Width of the hidden layer; 0 for a linear head.
    pub hidden: usize,
    pub input: Normalisation,
    #[serde(flatten)]
    pub origin: Origin,
}

impl HeadSpec {
    /// How it was trained; `None` for a zero-shot head.
    pub fn training(&self) -> Option<&Training> {
        match &self.origin {
            Origin::Trained { training, .. } => Some(training),
            Origin::ZeroShot { .. } => None,
        }
    }

    /// How well it did on held-out data; `None` for a zero-shot head.
    pub fn validation(&self) -> Option<&Validation> {
        match &self.origin {
            Origin::Trained { validation, .. } => Some(validation),
            Origin::ZeroShot { .. } => None,
        }
    }
}

/// Where a head's weights came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Origin {
    Trained {
        training: Training,
        validation: Validation,
    },
    ZeroShot {
        zero_shot: ZeroShot,
    },
}

/// A head whose weights are CLIP's text features of one prompt per class:
/// its probabilities are CLIP's zero-shot ones.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ZeroShot {
    /// The text tower's checkpoint.
    pub text_model: String,
    /// The template each class name was put into.
    pub template: String,
    /// One prompt per class, as the text tower read it.
    pub prompts: Vec<String>,
    /// CLIP's `exp(logit_scale)`, folded into the weights.
    pub logit_scale: f32,
}

/// The embeddings a head was trained on; it is refused on any other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    pub task: String,
    /// The model name the embeddings' status recorded.
    pub model: Option<String>,
    pub dim: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// One of `classes`, by cross-entropy.
    Classes { classes: Vec<String> },
    /// A number in `unit`; trained standardised, reported in the unit.
    Number { unit: String, mean: f32, std: f32 },
}

/// How embeddings are prepared before the first layer: scaled to unit
/// length when `unit_length` (zero-shot heads: CLIP compares directions),
/// then `(x - mean) / std` (trained heads: the training split's
/// statistics).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Normalisation {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unit_length: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Training {
    pub loss: String,
    pub seed: u64,
    pub split: String,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub epochs: usize,
    /// The epoch whose weights were kept (lowest validation loss).
    pub best_epoch: usize,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub train_videos: usize,
    pub validation_videos: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Validation {
    pub loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// `confusion[true][predicted]` row counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confusion: Option<Vec<Vec<u64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
}
