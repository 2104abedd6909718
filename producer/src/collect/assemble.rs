//! Turns a complete set of parts into the video's final outputs, streaming
//! one part at a time so that memory does not grow with video length.

use anyhow::{Context, ensure};
use aws_sdk_s3::Client;
use schema::{Message, ObjectRef, VideoDone};
use serde::Serialize;
use uuid::Uuid;

use super::{
    captions::{CaptionLine, Vtt},
    layout::{Layout, done_key, part_key, parts_prefix},
    npy,
    status::{State, Status, Timings, now_unix_ms},
};
use crate::s3::{self, ObjectWriter};

#[derive(Serialize)]
struct FrameLine<'a> {
    index: u64,
    pts_s: f64,
    labels: &'a [schema::Label],
}

fn decode_stored<T>(
    bytes: &[u8],
    what: &str,
    pick: impl FnOnce(Message) -> Option<T>,
) -> anyhow::Result<T> {
    let message = schema::decode(bytes).with_context(|| format!("stored {what} is unreadable"))?;
    pick(message).with_context(|| format!("stored {what} holds another message kind"))
}

/// Assembles the video if its `VideoDone` and every part are stored.
/// Returns whether it did.
pub async fn try_finalize(
    client: &Client,
    output: &ObjectRef,
    video_id: Uuid,
) -> anyhow::Result<bool> {
    let Some(done) = s3::get(client, &output.bucket, &done_key(output, video_id)).await? else {
        return Ok(false);
    };
    let done = decode_stored(&done, "video done marker", |m| match m {
        Message::VideoDone(d) => Some(d),
        _ => None,
    })?;
    let prefix = parts_prefix(output, video_id);
    let stored = s3::list(client, &output.bucket, &prefix).await?;
    let parts = stored.iter().filter(|k| !k.ends_with("done.bin")).count();
    if parts < done.jobs as usize {
        tracing::debug!(video = %done.source, parts, jobs = done.jobs, "waiting for parts");
        return Ok(false);
    }
    assemble(client, &done).await?;
    for key in stored {
        s3::delete(client, &output.bucket, &key).await?;
    }
    Ok(true)
}

/// The embeddings outputs: the `.npy` matrix and its per-frame index.
struct EmbeddingSink<'c> {
    npy: ObjectWriter<'c>,
    frames: ObjectWriter<'c>,
    dim: u32,
    rows: u64,
}

/// The caption outputs: JSON lines and WebVTT.
struct CaptionSink<'c> {
    jsonl: ObjectWriter<'c>,
    vtt: ObjectWriter<'c>,
    cues: Vtt,
}

async fn assemble(client: &Client, done: &VideoDone) -> anyhow::Result<()> {
    ensure!(
        done.jobs > 0,
        "video done marker for {} counts no jobs",
        done.source
    );
    let output = &done.output;
    let layout = Layout {
        output,
        source_key: &done.source.key,
    };
    let (npy_key, frames_key) = (layout.embeddings(), layout.frames());
    let (jsonl_key, vtt_key) = (layout.captions_jsonl(), layout.captions_vtt());
    // Which outputs exist follows the first part; every other part must agree.
    let mut embedding_sink: Option<EmbeddingSink> = None;
    let mut caption_sink: Option<CaptionSink> = None;
    let mut written = 0u64;
    let mut compute_ms = 0u64;
    let mut model = None;
    for seq in 0..done.jobs {
        let key = part_key(output, done.video_id, seq);
        let bytes = s3::get(client, &output.bucket, &key)
            .await?
            .with_context(|| format!("part {seq} of {} vanished during assembly", done.source))?;
        let part = decode_stored(&bytes, "result part", |m| match m {
            Message::FrameResult(r) => Some(r),
            _ => None,
        })?;
        ensure!(part.seq == seq, "part {key} holds seq {}", part.seq);
        if seq == 0 {
            if part.dim > 0 {
                let mut npy =
                    ObjectWriter::new(client, &output.bucket, &npy_key, "application/octet-stream");
                npy.write(&npy::f32_matrix_header(done.frames, u64::from(part.dim)))
                    .await?;
                let mut frames =
                    ObjectWriter::new(client, &output.bucket, &frames_key, "application/json");
                frames.write(b"[").await?;
                embedding_sink = Some(EmbeddingSink {
                    npy,
                    frames,
                    dim: part.dim,
                    rows: 0,
                });
            }
            if !part.captions.is_empty() {
                let jsonl =
                    ObjectWriter::new(client, &output.bucket, &jsonl_key, "application/jsonl");
                let mut vtt = ObjectWriter::new(client, &output.bucket, &vtt_key, "text/vtt");
                vtt.write(Vtt::HEADER).await?;
                caption_sink = Some(CaptionSink {
                    jsonl,
                    vtt,
                    cues: Vtt::default(),
                });
            }
        }
        ensure!(
            embedding_sink.as_ref().map_or(0, |e| e.dim) == part.dim,
            "part {seq} has embedding dim {}, unlike part 0",
            part.dim
        );
        ensure!(
            caption_sink.is_some() != part.captions.is_empty(),
            "part {seq} disagrees with part 0 on carrying captions"
        );
        if let Some(sink) = &mut embedding_sink {
            let mut row_bytes = Vec::with_capacity(part.embeddings.len() * 4);
            for v in &part.embeddings {
                row_bytes.extend_from_slice(&v.to_le_bytes());
            }
            sink.npy.write(&row_bytes).await?;
            for (i, frame) in part.frames.iter().enumerate() {
                let line = FrameLine {
                    index: frame.index,
                    pts_s: frame.pts_s,
                    labels: part.labels.get(i).map_or(&[], Vec::as_slice),
                };
                let sep: &[u8] = if sink.rows == 0 { b"\n" } else { b",\n" };
                sink.frames.write(sep).await?;
                sink.frames.write(&serde_json::to_vec(&line)?).await?;
                sink.rows += 1;
            }
        }
        if let Some(sink) = &mut caption_sink {
            let mut lines = Vec::new();
            let mut cues = String::new();
            for (frame, caption) in part.frames.iter().zip(&part.captions) {
                let line = CaptionLine {
                    index: frame.index,
                    pts_s: frame.pts_s,
                    caption,
                };
                serde_json::to_writer(&mut lines, &line)?;
                lines.push(b'\n');
                cues += &sink.cues.push(frame.pts_s, caption);
            }
            sink.jsonl.write(&lines).await?;
            sink.vtt.write(cues.as_bytes()).await?;
        }
        written += part.frames.len() as u64;
        compute_ms += u64::from(part.compute_ms);
        model = Some(part.model);
    }
    ensure!(
        written == done.frames,
        "{} frames in parts, producer sampled {}",
        written,
        done.frames
    );
    let mut outputs = Vec::new();
    if let Some(mut sink) = embedding_sink {
        sink.frames.write(b"\n]\n").await?;
        sink.npy.finish().await?;
        sink.frames.finish().await?;
        outputs.push(format!("s3://{}/{npy_key}", output.bucket));
        outputs.push(format!("s3://{}/{frames_key}", output.bucket));
    }
    if let Some(mut sink) = caption_sink {
        sink.vtt.write(sink.cues.finish().as_bytes()).await?;
        sink.jsonl.finish().await?;
        sink.vtt.finish().await?;
        outputs.push(format!("s3://{}/{jsonl_key}", output.bucket));
        outputs.push(format!("s3://{}/{vtt_key}", output.bucket));
    }
    let state = match done.coverage.incomplete {
        Some(_) => State::Incomplete,
        None => State::Done,
    };
    let status = Status {
        state,
        video_id: done.video_id,
        source: done.source.to_string(),
        task: done.task.clone(),
        model,
        frames: done.frames,
        decoded: done.decoded,
        jobs: done.jobs,
        error: done.coverage.incomplete.clone(),
        coverage: Some(done.coverage.clone()),
        timings: Timings {
            decode_ms: done.decode_ms,
            compute_ms,
        },
        outputs,
        etag: done.provenance.etag.clone(),
        fingerprint: Some(done.provenance.fingerprint.clone()),
        finished_at_unix_ms: now_unix_ms(),
    };
    s3::put(
        client,
        &output.bucket,
        &layout.status(),
        serde_json::to_vec_pretty(&status)?,
        "application/json",
    )
    .await?;
    super::release_claim(client, &layout, done.video_id).await?;
    metrics::counter!(fleet::metrics::VIDEOS_FINISHED, "state" => state.as_str()).increment(1);
    tracing::info!(video = %done.source, frames = done.frames, state = state.as_str(), "outputs written");
    Ok(())
}
