//! The labels file a head is trained from: CSV with a header row, or JSON
//! lines, one label per row. Each row names a video (its key, as in the
//! bucket) and either one frame (`frame`, the index in `frames.json`) or a
//! time range (`start_s`, `end_s`: every sampled frame with
//! start_s <= pts < end_s), and either a class (`label`) or a number
//! (`value`):
//!
//! ```text
//! video,frame,start_s,end_s,label
//! videos/street.mp4,120,,,car
//! videos/street.mp4,,10.0,20.0,empty
//! ```

use std::path::Path;

use anyhow::{Context, bail, ensure};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Row {
    video: String,
    #[serde(default)]
    frame: Option<u64>,
    #[serde(default)]
    start_s: Option<f64>,
    #[serde(default)]
    end_s: Option<f64>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    value: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Span {
    Frame(u64),
    /// `[start, end)` in seconds.
    Range(f64, f64),
}

impl Span {
    pub fn covers(self, index: u64, pts_s: f64) -> bool {
        match self {
            Span::Frame(i) => i == index,
            Span::Range(start, end) => start <= pts_s && pts_s < end,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Class(String),
    Number(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Labelled {
    /// Where in the file, for errors: `labels.csv line 7`.
    pub line: usize,
    pub video: String,
    pub span: Span,
    pub answer: Answer,
}

impl Row {
    fn into_labelled(self, line: usize) -> anyhow::Result<Labelled> {
        let span = match (self.frame, self.start_s, self.end_s) {
            (Some(f), None, None) => Span::Frame(f),
            (None, Some(s), Some(e)) if s.is_finite() && e.is_finite() && s < e => {
                Span::Range(s, e)
            }
            (None, Some(s), Some(e)) => bail!("the range {s}..{e} s is empty or not finite"),
            _ => bail!("give either frame, or start_s and end_s"),
        };
        let answer = match (self.label, self.value) {
            (Some(l), None) if !l.trim().is_empty() => Answer::Class(l.trim().to_owned()),
            (None, Some(v)) if v.is_finite() => Answer::Number(v),
            _ => bail!("give either a label or a finite value"),
        };
        ensure!(!self.video.is_empty(), "the video is empty");
        Ok(Labelled {
            line,
            video: self.video,
            span,
            answer,
        })
    }
}

/// Reads and checks every row; all rows must be classes or all numbers.
pub fn read(path: &Path) -> anyhow::Result<Vec<Labelled>> {
    let name = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
    let jsonl = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("jsonl" | "json" | "ndjson")
    );
    let mut labelled = Vec::new();
    if jsonl {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row: Row =
                serde_json::from_str(line).with_context(|| format!("{name} line {}", i + 1))?;
            labelled.push(
                row.into_labelled(i + 1)
                    .with_context(|| format!("{name} line {}", i + 1))?,
            );
        }
    } else {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        for (i, row) in reader.deserialize::<Row>().enumerate() {
            // Line 1 is the header.
            let line = i + 2;
            let row = row.with_context(|| format!("{name} line {line}"))?;
            labelled.push(
                row.into_labelled(line)
                    .with_context(|| format!("{name} line {line}"))?,
            );
        }
    }
    ensure!(!labelled.is_empty(), "{name} holds no labels");
    let classes = labelled
        .iter()
        .filter(|l| matches!(l.answer, Answer::Class(_)))
        .count();
    ensure!(
        classes == 0 || classes == labelled.len(),
        "{name} mixes class labels and numeric values; a head learns one or the other"
    );
    Ok(labelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> anyhow::Result<Vec<Labelled>> {
        let path = std::env::temp_dir().join(format!("ff-labels-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write");
        let out = read(&path);
        std::fs::remove_file(&path).ok();
        out
    }

    #[test]
    fn csv_rows_are_frames_or_ranges() {
        let rows = parse(
            "a.csv",
            "video,frame,start_s,end_s,label\nv/a.mp4,12,,,car\nv/b.mp4,,1.5,3,empty street\n",
        )
        .expect("parses");
        assert_eq!(rows[0].span, Span::Frame(12));
        assert_eq!(rows[0].answer, Answer::Class("car".into()));
        assert_eq!(rows[1].span, Span::Range(1.5, 3.0));
        assert_eq!(rows[1].line, 3);
        assert!(rows[1].span.covers(99, 1.5) && !rows[1].span.covers(99, 3.0));
    }

    #[test]
    fn jsonl_rows_carry_numbers() {
        let rows = parse(
            "a.jsonl",
            "{\"video\":\"v/a.mp4\",\"frame\":3,\"value\":2}\n\n{\"video\":\"v/a.mp4\",\"start_s\":0,\"end_s\":1,\"value\":0.5}\n",
        )
        .expect("parses");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].answer, Answer::Number(0.5));
    }

    #[test]
    fn bad_rows_name_their_line() {
        let err = |t| format!("{:#}", parse("b.csv", t).expect_err("refused"));
        assert!(err("video,frame,label\nv.mp4,1,car\nv.mp4,,car\n").contains("line 3"));
        assert!(err("video,frame,label,value\nv.mp4,1,car,2\n").contains("either a label"));
        assert!(err("video,start_s,end_s,label\nv.mp4,3,1,car\n").contains("empty"));
        assert!(err("video,frame,label,value\nv.mp4,1,car,\nv.mp4,2,,3\n").contains("mixes"));
        assert!(err("video,frame,label\n").contains("no labels"));
    }
}
