//! Zero-shot heads: a class per label, built from CLIP's text tower
//! instead of trained. The head's one linear layer holds each label
//! prompt's text features, scaled to unit length and multiplied by CLIP's
//! logit scale, and the head scales each image embedding to unit length:
//! its logits are transformers' `logits_per_image`, so its probabilities
//! are CLIP's zero-shot ones. It is saved and loaded as any head is.

use anyhow::ensure;
use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;

use super::{
    NewHead,
    spec::{Encoder, FORMAT, HeadSpec, Normalisation, Origin, Target, ZeroShot},
};
use crate::models::clip::TextEncoder;

/// Where the label goes in a prompt template.
pub const SLOT: &str = "{}";

/// What the head is built from.
pub struct Request<'a> {
    pub name: &'a str,
    /// The embed task whose embeddings it reads.
    pub task: &'a str,
    /// The checkpoint's name, recorded as the text model and the encoder.
    pub model: &'a str,
    pub labels: &'a [String],
    /// A prompt per label, with `{}` where the label goes.
    pub template: &'a str,
}

pub fn build(text: &TextEncoder, request: &Request<'_>) -> anyhow::Result<NewHead> {
    let labels = request.labels;
    ensure!(
        labels.len() >= 2,
        "a zero-shot head needs two labels or more to choose between; got {}",
        labels.len()
    );
    for (i, label) in labels.iter().enumerate() {
        ensure!(!label.trim().is_empty(), "label {} is empty", i + 1);
        ensure!(
            !labels[..i].contains(label),
            "label {label:?} is given twice"
        );
    }
    ensure!(
        request.template.contains(SLOT),
        "the template {:?} has no {SLOT} for the label",
        request.template
    );
    let prompts: Vec<String> = labels
        .iter()
        .map(|label| request.template.replace(SLOT, label))
        .collect();
    let dim = text.dim;
    let mut weight = Vec::with_capacity(labels.len() * dim);
    for prompt in &prompts {
        let features = text.features(prompt)?;
        let norm = features
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt()
            .max(1e-12);
        weight.extend(features.iter().map(|v| v * text.logit_scale / norm));
    }
    let varmap = VarMap::new();
    {
        let mut vars = varmap.data().lock().expect("var map lock");
        let weight = Tensor::from_vec(weight, (labels.len(), dim), &Device::Cpu)?;
        let bias = Tensor::zeros(labels.len(), candle_core::DType::F32, &Device::Cpu)?;
        vars.insert("out.weight".into(), Var::from_tensor(&weight)?);
        vars.insert("out.bias".into(), Var::from_tensor(&bias)?);
    }
    let spec = HeadSpec {
        format: FORMAT.to_owned(),
        name: request.name.to_owned(),
        encoder: Encoder {
            task: request.task.to_owned(),
            model: Some(request.model.to_owned()),
            dim,
        },
        target: Target::Classes {
            classes: labels.to_vec(),
        },
        hidden: 0,
        input: Normalisation {
            mean: vec![0.0; dim],
            std: vec![1.0; dim],
            unit_length: true,
        },
        origin: Origin::ZeroShot {
            zero_shot: ZeroShot {
                text_model: request.model.to_owned(),
                template: request.template.to_owned(),
                prompts,
                logit_scale: text.logit_scale,
            },
        },
    };
    Ok(NewHead { varmap, spec })
}
