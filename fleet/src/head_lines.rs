//! `heads/NAME/KEY.jsonl`: one JSON line per frame with what a head said.
//! Written by the collector from results and by offline application from
//! stored embeddings, so both produce the same bytes.

use schema::{Frame, HeadValues};
use serde::Serialize;

#[derive(Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Class {
        index: u64,
        pts_s: f64,
        label: &'a str,
        class: u32,
        score: f32,
    },
    Number {
        index: u64,
        pts_s: f64,
        value: f32,
    },
}

/// The lines for `frames`, in order; `values` holds one per frame
/// (results are validated to), extra values are ignored.
pub fn head_lines(frames: &[Frame], values: &HeadValues) -> serde_json::Result<Vec<u8>> {
    let lines: Vec<Line<'_>> = match values {
        HeadValues::Classes(labels) => frames
            .iter()
            .zip(labels)
            .map(|(f, l)| Line::Class {
                index: f.index,
                pts_s: f.pts_s,
                label: &l.name,
                class: l.class,
                score: l.score,
            })
            .collect(),
        HeadValues::Numbers(numbers) => frames
            .iter()
            .zip(numbers)
            .map(|(f, &value)| Line::Number {
                index: f.index,
                pts_s: f.pts_s,
                value,
            })
            .collect(),
    };
    let mut out = Vec::new();
    for line in lines {
        serde_json::to_writer(&mut out, &line)?;
        out.push(b'\n');
    }
    Ok(out)
}
