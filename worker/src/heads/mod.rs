//! Heads: small models trained on stored embeddings that answer one
//! question each (what time of day, how many people) without the pixels.
//! `train` makes one from labelled embeddings in the bucket; the worker
//! runs heads on each batch (`--head`); `offline` runs them over
//! embeddings already stored.

pub mod bucket;
pub mod command;
pub mod dataset;
pub mod labels;
mod mlp;
pub mod offline;
pub mod spec;
mod stored;
pub mod train;
pub mod zero_shot;

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use candle_core::{D, Device, Module, Tensor};
use candle_nn::VarMap;
use schema::{HeadOutputs, HeadValues, Label};

use mlp::Mlp;
use spec::{HeadSpec, Target};

pub const WEIGHTS: &str = "head.safetensors";
pub const SPEC: &str = "head.json";

/// A head just made (trained, or built from prompts), before it is saved.
pub struct NewHead {
    pub varmap: VarMap,
    pub spec: HeadSpec,
}

impl NewHead {
    /// Writes `head.safetensors` and `head.json` into `dir`, which
    /// `Head::load` reads.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        self.varmap.save(dir.join(WEIGHTS))?;
        std::fs::write(dir.join(SPEC), serde_json::to_vec_pretty(&self.spec)?)?;
        Ok(())
    }
}

/// A head, ready to run.
pub struct Head {
    pub spec: HeadSpec,
    mlp: Mlp,
}

impl Head {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(SPEC);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the head's {}", path.display()))?;
        let spec: HeadSpec = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a head description", path.display()))?;
        parse_name(&spec.name).map_err(|e| anyhow::anyhow!("{}: head name {e}", path.display()))?;
        ensure!(
            spec::READABLE.contains(&spec.format.as_str()),
            "{} is format {:?}; this build reads {:?}",
            path.display(),
            spec.format,
            spec::READABLE
        );
        let dim = spec.encoder.dim;
        ensure!(
            spec.input.mean.len() == dim && spec.input.std.len() == dim,
            "{}: input normalisation does not match the encoder's {dim} dimensions",
            path.display()
        );
        ensure!(
            spec.input.mean.iter().all(|m| m.is_finite())
                && spec.input.std.iter().all(|s| s.is_finite() && *s > 0.0),
            "{}: input normalisation must be finite, with positive std",
            path.display()
        );
        if let Target::Number { mean, std, .. } = &spec.target {
            ensure!(
                mean.is_finite() && std.is_finite() && *std > 0.0,
                "{}: the target's mean and std must be finite, std positive",
                path.display()
            );
        }
        let weights = dir.join(WEIGHTS);
        let mlp = Mlp::load(
            &weights,
            dim,
            spec.hidden,
            spec.outputs(),
            &spec.input,
            &Device::Cpu,
        )
        .with_context(|| {
            format!(
                "weights in {} do not fit {}",
                weights.display(),
                path.display()
            )
        })?;
        Ok(Self { spec, mlp })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Refuses embeddings other than those the head was built for (trained
    /// on, or, for a zero-shot head, whose text tower made it).
    pub fn check_encoder(&self, task: &str, dim: usize) -> anyhow::Result<()> {
        let encoder = &self.spec.encoder;
        ensure!(
            encoder.task == task && encoder.dim == dim,
            "head {} reads {} embeddings of {} dimensions; these are {task} with {dim}",
            self.spec.name,
            encoder.task,
            encoder.dim
        );
        Ok(())
    }

    /// Runs the head over `rows` embeddings packed one after another.
    pub fn apply(&self, embeddings: &[f32], rows: usize) -> candle_core::Result<HeadValues> {
        let x = Tensor::from_slice(embeddings, (rows, self.spec.encoder.dim), &Device::Cpu)?;
        let out = self.mlp.forward(&x)?;
        Ok(match &self.spec.target {
            Target::Classes { classes } => {
                let probabilities = candle_nn::ops::softmax_last_dim(&out)?;
                let best = probabilities.argmax(D::Minus1)?.to_vec1::<u32>()?;
                let scores = probabilities.max(D::Minus1)?.to_vec1::<f32>()?;
                HeadValues::Classes(
                    best.into_iter()
                        .zip(scores)
                        .map(|(class, score)| Label {
                            class,
                            name: classes[class as usize].clone(),
                            score,
                        })
                        .collect(),
                )
            }
            Target::Number { mean, std, .. } => HeadValues::Numbers(
                out.flatten_all()?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(|v| v * std + mean)
                    .collect(),
            ),
        })
    }

    /// The head's outputs for a batch, as results carry them.
    pub fn outputs(&self, embeddings: &[f32], rows: usize) -> candle_core::Result<HeadOutputs> {
        Ok(HeadOutputs {
            name: self.spec.name.clone(),
            values: self.apply(embeddings, rows)?,
        })
    }
}

impl HeadSpec {
    /// Width of the output layer.
    pub fn outputs(&self) -> usize {
        match &self.target {
            Target::Classes { classes } => classes.len(),
            Target::Number { .. } => 1,
        }
    }
}

/// A head's name becomes a key segment (`heads/NAME/`): letters, digits,
/// `-`, `_` and `.` only.
pub fn parse_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?}: use 1-64 letters, digits, '-', '_' or '.', not starting with '.'"
        ))
    }
}

/// Loads every head, refusing any that does not fit the task's embeddings
/// or repeats another's name (their outputs would overwrite each other).
pub fn load_all(dirs: &[PathBuf], task: &str, dim: usize) -> anyhow::Result<Vec<Head>> {
    let mut heads: Vec<Head> = Vec::new();
    for dir in dirs {
        let head = Head::load(dir)?;
        head.check_encoder(task, dim)
            .with_context(|| format!("head in {} cannot run here", dir.display()))?;
        ensure!(
            heads.iter().all(|h| h.name() != head.name()),
            "two heads are named {}",
            head.name()
        );
        heads.push(head);
    }
    Ok(heads)
}
