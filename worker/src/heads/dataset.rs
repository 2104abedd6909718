//! Pairs a labels file with the embeddings stored in the bucket: the
//! training set of a head. Only labelled rows are kept in memory.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail, ensure};
use aws_sdk_s3::Client;
use schema::ObjectRef;

use super::{
    labels::{Answer, Labelled},
    spec::Encoder,
    stored::Stored,
    train::{Dataset, Targets},
};

/// Rows read per block while scanning a video's embeddings.
const BLOCK: usize = 4096;

/// Reads the labelled rows of every video the labels name. `unit` names a
/// numeric target's unit.
pub async fn gather(
    client: &Client,
    output: &ObjectRef,
    labels: &[Labelled],
    unit: &str,
) -> anyhow::Result<(Dataset, Encoder)> {
    let mut by_video: BTreeMap<&str, Vec<&Labelled>> = BTreeMap::new();
    for l in labels {
        by_video.entry(&l.video).or_default().push(l);
    }
    let classes: Vec<String> = labels
        .iter()
        .filter_map(|l| match &l.answer {
            Answer::Class(c) => Some(c.clone()),
            Answer::Number(_) => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut encoder: Option<Encoder> = None;
    let mut x = Vec::new();
    let mut answers: Vec<&Answer> = Vec::new();
    let mut video_of_row = Vec::new();
    let mut matched = vec![0usize; labels.len()];
    let line_index: BTreeMap<usize, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.line, i))
        .collect();
    let (mut values, mut frames) = (Vec::new(), Vec::new());
    for (v, (video, video_labels)) in by_video.iter().enumerate() {
        let mut stored = Stored::open(client, output, video).await?;
        let this = Encoder {
            task: stored.task.clone(),
            model: stored.model.clone(),
            dim: stored.dim,
        };
        match &encoder {
            None => encoder = Some(this),
            Some(first) => ensure!(
                *first == this,
                "{video} holds {} embeddings ({} dims) but the first video holds {} ({} dims): a head learns from one encoder",
                this.task,
                this.dim,
                first.task,
                first.dim
            ),
        }
        while stored.next_block(BLOCK, &mut values, &mut frames).await? > 0 {
            for (i, frame) in frames.iter().enumerate() {
                let mut covering = video_labels
                    .iter()
                    .filter(|l| l.span.covers(frame.index, frame.pts_s));
                let Some(first) = covering.next() else {
                    continue;
                };
                if let Some(other) = covering.find(|l| l.answer != first.answer) {
                    bail!(
                        "{video} frame {} is labelled twice, differently (lines {} and {})",
                        frame.index,
                        first.line,
                        other.line
                    );
                }
                for l in video_labels
                    .iter()
                    .filter(|l| l.span.covers(frame.index, frame.pts_s))
                {
                    matched[line_index[&l.line]] += 1;
                }
                x.extend_from_slice(&values[i * stored.dim..(i + 1) * stored.dim]);
                answers.push(&first.answer);
                video_of_row.push(v);
            }
        }
    }
    let unmatched: Vec<usize> = labels
        .iter()
        .zip(&matched)
        .filter(|(_, n)| **n == 0)
        .map(|(l, _)| l.line)
        .collect();
    if !unmatched.is_empty() {
        tracing::warn!(
            count = unmatched.len(),
            lines = ?&unmatched[..unmatched.len().min(20)],
            "labels that match no sampled frame (a frame not sampled, or a range between samples)"
        );
    }
    ensure!(!answers.is_empty(), "no label matches a stored frame");
    let numbers: Vec<f32> = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Number(n) => Some(*n as f32),
            Answer::Class(_) => None,
        })
        .collect();
    let ids: Vec<u32> = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Class(c) => classes.binary_search(c).ok().map(|i| i as u32),
            Answer::Number(_) => None,
        })
        .collect();
    let targets = if ids.len() == answers.len() {
        Targets::Classes {
            ids,
            names: classes,
        }
    } else if numbers.len() == answers.len() {
        Targets::Numbers {
            values: numbers,
            unit: unit.to_owned(),
        }
    } else {
        bail!("the labels mix classes and numbers");
    };
    let encoder = encoder.context("no video was read")?;
    Ok((
        Dataset {
            dim: encoder.dim,
            x,
            targets,
            video: video_of_row,
            videos: by_video.len(),
        },
        encoder,
    ))
}
