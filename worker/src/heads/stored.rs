//! A video's embeddings as the collector stored them (`embeddings/KEY.npy`
//! and `KEY.frames.json`, with the run's `status/KEY.json`), read block by
//! block: memory holds one block, however long the video.

use std::pin::Pin;

use anyhow::{Context, ensure};
use aws_sdk_s3::Client;
use fleet::{
    layout::Layout,
    npy,
    status::{State, Status},
    store,
};
use schema::{Frame, ObjectRef};
use serde::Deserialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, Lines};

type Reader = Pin<Box<dyn AsyncBufRead + Send>>;

pub struct Stored {
    npy: Reader,
    frames: Lines<Reader>,
    pub rows: u64,
    pub dim: usize,
    read: u64,
    pub task: String,
    pub model: Option<String>,
}

/// The part of a `frames.json` line a head needs.
#[derive(Deserialize)]
struct FrameLine {
    index: u64,
    pts_s: f64,
}

impl Stored {
    /// Opens the embeddings of `video` (a source key) under `output`.
    pub async fn open(client: &Client, output: &ObjectRef, video: &str) -> anyhow::Result<Self> {
        let layout = Layout {
            output,
            source_key: video,
        };
        let bucket = &output.bucket;
        let status = store::get(client, bucket, &layout.status())
            .await?
            .with_context(|| {
                format!(
                    "{video} has no status under s3://{bucket}/{}: not processed yet",
                    output.key
                )
            })?;
        let status: Status = serde_json::from_slice(&status)
            .with_context(|| format!("status of {video} is unreadable"))?;
        ensure!(
            status.state != State::Failed,
            "{video} failed to process: {}",
            status.error.as_deref().unwrap_or("no reason recorded")
        );
        let open = |key: String| async move {
            store::open(client, bucket, &key)
                .await?
                .with_context(|| format!("s3://{bucket}/{key} is missing"))
        };
        let mut npy: Reader = Box::pin(open(layout.embeddings()).await?);
        let (rows, dim) = npy::read_f32_matrix_header(&mut npy)
            .await
            .with_context(|| format!("embeddings of {video}"))?;
        ensure!(dim > 0, "embeddings of {video} have no columns");
        let frames: Reader = Box::pin(open(layout.frames()).await?);
        Ok(Self {
            npy,
            frames: frames.lines(),
            rows,
            dim: dim as usize,
            read: 0,
            task: status.task,
            model: status.model,
        })
    }

    /// Reads up to `max_rows` more rows and their frames; returns how many
    /// (0 at the end).
    pub async fn next_block(
        &mut self,
        max_rows: usize,
        values: &mut Vec<f32>,
        frames: &mut Vec<Frame>,
    ) -> anyhow::Result<usize> {
        let n = (self.rows - self.read).min(max_rows as u64) as usize;
        frames.clear();
        while frames.len() < n {
            let line = self
                .frames
                .next_line()
                .await?
                .context("frames.json has fewer frames than the embeddings have rows")?;
            let line = line.trim().trim_end_matches(',');
            if line.is_empty() || line == "[" || line == "]" {
                continue;
            }
            let f: FrameLine = serde_json::from_str(line).context("frames.json line unreadable")?;
            frames.push(Frame {
                index: f.index,
                pts_s: f.pts_s,
            });
        }
        npy::read_f32_rows(&mut self.npy, n, self.dim, values).await?;
        self.read += n as u64;
        Ok(n)
    }
}
