//! Heads over embeddings already in the bucket: no decoding, no encoder,
//! only S3 reads and a few small matrix products per block of frames.

use std::time::Instant;

use aws_sdk_s3::Client;
use fleet::{head_lines::head_lines, layout::Layout, store};
use schema::{Frame, ObjectRef};
use tokio::sync::mpsc;

use super::{Head, stored::Stored};

/// Rows per block: a 1280-dim block is 20 MiB of floats at most.
const BLOCK: usize = 4096;

#[derive(Debug, Default)]
pub struct Report {
    pub videos: usize,
    pub rows: u64,
    /// (video, reason) for each video that could not be done.
    pub failed: Vec<(String, String)>,
    /// Time spent waiting for stored embeddings (reads not hidden behind
    /// the heads), and in the heads.
    pub waiting_s: f64,
    pub heads_s: f64,
}

/// Runs `heads` over every video with embeddings under `output` whose key
/// starts with `prefix`, writing `heads/NAME/KEY.jsonl` for each. A video
/// that fails is reported and the rest carry on.
pub async fn apply(
    client: &Client,
    output: &ObjectRef,
    prefix: &str,
    heads: &[Head],
) -> anyhow::Result<Report> {
    let root = format!("{}embeddings/", output.key);
    let mut pages = store::Pages::new(client, &output.bucket, &format!("{root}{prefix}"));
    let mut report = Report::default();
    while let Some(page) = pages.next().await? {
        for listed in page {
            let Some(video) = listed
                .key
                .strip_prefix(&root)
                .and_then(|k| k.strip_suffix(".npy"))
            else {
                continue;
            };
            match apply_one(client, output, video, heads, &mut report).await {
                Ok(rows) => {
                    report.videos += 1;
                    report.rows += rows;
                    tracing::info!(video, rows, done = report.videos, "heads applied");
                }
                Err(e) => {
                    tracing::error!(video, error = format!("{e:#}"), "heads not applied");
                    report.failed.push((video.to_owned(), format!("{e:#}")));
                }
            }
        }
    }
    Ok(report)
}

async fn apply_one(
    client: &Client,
    output: &ObjectRef,
    video: &str,
    heads: &[Head],
    report: &mut Report,
) -> anyhow::Result<u64> {
    let mut stored = Stored::open(client, output, video).await?;
    for head in heads {
        head.check_encoder(&stored.task, stored.dim)?;
    }
    let layout = Layout {
        output,
        source_key: video,
    };
    let mut writers: Vec<_> = heads
        .iter()
        .map(|h| {
            store::ObjectWriter::new(
                client,
                &output.bucket,
                &layout.head(h.name()),
                "application/jsonl",
            )
        })
        .collect();
    // The next block is read while the heads run on this one: application
    // then costs about what the reads cost, not their sum.
    let (blocks, mut next) = mpsc::channel::<anyhow::Result<(Vec<f32>, Vec<Frame>)>>(1);
    let reader = tokio::spawn(async move {
        loop {
            let (mut values, mut frames) = (Vec::new(), Vec::new());
            let block = match stored.next_block(BLOCK, &mut values, &mut frames).await {
                Ok(0) => return,
                Ok(_) => Ok((values, frames)),
                Err(e) => Err(e),
            };
            let failed = block.is_err();
            if blocks.send(block).await.is_err() || failed {
                return;
            }
        }
    });
    let mut rows = 0u64;
    let result: anyhow::Result<()> = async {
        loop {
            let waited = Instant::now();
            let Some(block) = next.recv().await else {
                return Ok(());
            };
            report.waiting_s += waited.elapsed().as_secs_f64();
            let (values, frames) = block?;
            let n = frames.len();
            for (head, writer) in heads.iter().zip(&mut writers) {
                let started = Instant::now();
                let answers = tokio::task::block_in_place(|| head.apply(&values, n))?;
                report.heads_s += started.elapsed().as_secs_f64();
                writer.write(&head_lines(&frames, &answers)?).await?;
            }
            rows += n as u64;
        }
    }
    .await;
    reader.abort();
    if let Err(e) = result {
        for w in writers {
            w.abort().await;
        }
        return Err(e);
    }
    let mut writers = writers.into_iter();
    while let Some(w) = writers.next() {
        if let Err(e) = w.finish().await {
            for rest in writers {
                rest.abort().await;
            }
            return Err(e);
        }
    }
    Ok(rows)
}
