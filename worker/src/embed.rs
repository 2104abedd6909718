//! `worker embed`: an encoder (and heads) on image files, one JSON line per
//! image.

use std::{
    collections::BTreeMap,
    io::{BufWriter, Write},
    path::Path,
};

use anyhow::Context;
use schema::{HeadValues, Label};
use serde::Serialize;

use crate::{
    caption::read_image,
    cli::{CaptionOptions, EmbedArgs, Precision},
    heads, load,
    models::Images,
};

#[derive(Serialize)]
struct Line<'a> {
    image: &'a str,
    embedding: &'a [f32],
    #[serde(skip_serializing_if = "<[Label]>::is_empty")]
    labels: &'a [Label],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    heads: BTreeMap<&'a str, Answer<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Answer<'a> {
    Class {
        label: &'a str,
        class: u32,
        score: f32,
    },
    Number(f32),
}

/// The embed task a checkpoint's `config.json` names (`model_type`, or
/// `architecture` in the converted EfficientNet's).
fn task_of(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("config.json");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    let family = config["model_type"]
        .as_str()
        .or_else(|| config["architecture"].as_str())
        .unwrap_or_default();
    // CLIP's widths sit in vision_config, absent where they are the defaults.
    let vision = &config["vision_config"];
    let clip_b32 = vision["hidden_size"].as_u64().unwrap_or(768) == 768
        && vision["patch_size"].as_u64().unwrap_or(32) == 32;
    match (family, config["hidden_size"].as_u64()) {
        (f, _) if f.starts_with("efficientnet-lite") => Ok("embed.effnet-lite0".to_owned()),
        ("dinov2", Some(384)) => Ok("embed.dinov2-small".to_owned()),
        ("dinov2", Some(768)) => Ok("embed.dinov2-base".to_owned()),
        ("clip", _) if clip_b32 => Ok("embed.clip-vit-b32".to_owned()),
        (f, _) => anyhow::bail!(
            "{} names model {f:?} of this size, which has no embed task here; pass --task",
            path.display()
        ),
    }
}

pub fn run(args: &EmbedArgs) -> anyhow::Result<()> {
    let task = match (&args.task, &args.model.model_dir) {
        (Some(task), _) => task.clone(),
        (None, Some(dir)) => task_of(dir)?,
        (None, None) => anyhow::bail!("pass --task with --hub-repo"),
    };
    let caption = CaptionOptions {
        prompt: String::new(),
        max_tokens: 1,
        dtype: Precision::F32,
    };
    let spec = schema::known_task(&task).with_context(|| format!("unknown task {task}"))?;
    let (model, _) = load::model_for_task(&task, &args.model, &caption)?;
    let heads = heads::load_all(&args.heads, &task, model.embedding_dim())?;
    let (width, height) = model.input_size();
    anyhow::ensure!(
        width == height,
        "model input {width}x{height} is not square"
    );
    let mut out = BufWriter::new(std::io::stdout().lock());
    for paths in args.images.chunks(args.batch as usize) {
        let mut pixels = Vec::new();
        for path in paths {
            pixels.extend(read_image(path, width as u32, spec.fit)?);
        }
        let count = paths.len();
        let outputs = model.infer(Images {
            pixels: &pixels,
            count,
            width,
            height,
        })?;
        let answers = heads
            .iter()
            .map(|h| h.apply(&outputs.embeddings, count))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let dim = outputs.dim;
        for (i, path) in paths.iter().enumerate() {
            let embedding = outputs
                .embeddings
                .get(i * dim..(i + 1) * dim)
                .context("the model returned fewer embeddings than images")?;
            let line = Line {
                image: &path.to_string_lossy(),
                embedding,
                labels: outputs.labels.get(i).map_or(&[], Vec::as_slice),
                heads: heads
                    .iter()
                    .zip(&answers)
                    .filter_map(|(h, a)| {
                        let answer = match a {
                            HeadValues::Classes(v) => v.get(i).map(|l| Answer::Class {
                                label: &l.name,
                                class: l.class,
                                score: l.score,
                            }),
                            HeadValues::Numbers(v) => v.get(i).copied().map(Answer::Number),
                        }?;
                        Some((h.name(), answer))
                    })
                    .collect(),
            };
            serde_json::to_writer(&mut out, &line)?;
            writeln!(out)?;
        }
        out.flush()?;
    }
    Ok(())
}
