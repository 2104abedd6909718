//! `head.json`: what a head reads, what it says, how it was trained and how
//! well it did on data it never saw. Written beside `head.safetensors`.

use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "framefleet-head/1";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeadSpec {
    pub format: String,
    pub name: String,
    pub encoder: Encoder,
    pub target: Target,
    /// Width of the hidden layer; 0 for a linear head.
    pub hidden: usize,
    /// Inputs are standardised with the training split's statistics.
    pub input: Normalisation,
    pub training: Training,
    pub validation: Validation,
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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Normalisation {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
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
