//! Turns a complete set of parts into the video's final outputs, streaming
//! one part at a time so that memory does not grow with video length.

use std::collections::BTreeMap;

use anyhow::{Context, ensure};
use aws_sdk_s3::Client;
use futures::StreamExt;
use schema::{HeadValues, Message, ObjectRef, VideoDone};
use serde::Serialize;
use uuid::Uuid;

use fleet::{
    head_lines::head_lines,
    layout::{Layout, done_key, part_key, parts_prefix},
    npy,
    status::{State, Status, Timings, now_unix_ms},
    store::{self, ObjectWriter},
};

use super::captions::{CaptionLine, Vtt};

/// Parts fetched ahead of the one being written. Assembly is a chain of
/// GETs, one per job; a few in flight hide their latency (a 1,500-frame
/// video's 47 parts took 1.8 s one at a time). Memory holds at most this
/// many parts.
const PARTS_AHEAD: usize = 4;

#[derive(Serialize)]
struct FrameLine<'a> {
    index: u64,
    pts_s: f64,
    labels: &'a [schema::Label],
    /// What each head said of the frame, by head name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    heads: BTreeMap<&'a str, HeadValue<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum HeadValue<'a> {
    Class { label: &'a str, score: f32 },
    Number(f32),
}

fn head_value(values: &HeadValues, i: usize) -> Option<HeadValue<'_>> {
    match values {
        HeadValues::Classes(v) => v.get(i).map(|l| HeadValue::Class {
            label: &l.name,
            score: l.score,
        }),
        HeadValues::Numbers(v) => v.get(i).copied().map(HeadValue::Number),
    }
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
    let Some(done) = store::get(client, &output.bucket, &done_key(output, video_id)).await? else {
        return Ok(false);
    };
    let done = decode_stored(&done, "video done marker", |m| match m {
        Message::VideoDone(d) => Some(d),
        _ => None,
    })?;
    let prefix = parts_prefix(output, video_id);
    let stored = store::list(client, &output.bucket, &prefix).await?;
    let parts = stored.iter().filter(|k| !k.ends_with("done.bin")).count();
    if parts < done.jobs as usize {
        tracing::debug!(video = %done.source, parts, jobs = done.jobs, "waiting for parts");
        return Ok(false);
    }
    assemble(client, &done).await?;
    store::delete_all(client, &output.bucket, &stored).await?;
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

/// The outputs being written; which exist follows the first part.
#[derive(Default)]
struct Sinks<'c> {
    embedding: Option<EmbeddingSink<'c>>,
    caption: Option<CaptionSink<'c>>,
    /// `heads/NAME/KEY.jsonl`, in the order of part 0's heads.
    heads: Vec<(String, ObjectWriter<'c>)>,
}

impl<'c> Sinks<'c> {
    /// Every writer with the bytes that close its output.
    fn into_writers(self) -> Vec<(ObjectWriter<'c>, Vec<u8>)> {
        let mut writers = Vec::new();
        if let Some(sink) = self.embedding {
            writers.push((sink.npy, Vec::new()));
            writers.push((sink.frames, b"\n]\n".to_vec()));
        }
        if let Some(sink) = self.caption {
            let last = sink.cues.finish().into_bytes();
            writers.push((sink.jsonl, Vec::new()));
            writers.push((sink.vtt, last));
        }
        writers.extend(self.heads.into_iter().map(|(_, w)| (w, Vec::new())));
        writers
    }

    /// Closes and completes every output; returns their locations. On a
    /// failure the uploads not yet complete are aborted, so that no
    /// multipart parts linger in the store.
    async fn finish(self) -> anyhow::Result<Vec<String>> {
        let mut outputs = Vec::new();
        let mut writers = self.into_writers().into_iter();
        while let Some((mut writer, closing)) = writers.next() {
            let location = writer.location();
            let result = match writer.write(&closing).await {
                Ok(()) => writer.finish().await,
                Err(e) => {
                    writer.abort().await;
                    Err(e)
                }
            };
            if let Err(e) = result {
                for (writer, _) in writers {
                    writer.abort().await;
                }
                return Err(e);
            }
            outputs.push(location);
        }
        Ok(outputs)
    }

    async fn abort(self) {
        for (writer, _) in self.into_writers() {
            writer.abort().await;
        }
    }
}

/// Streams the parts in seq order into the outputs; returns the summed
/// model time and the model's name.
async fn stream_parts<'c>(
    client: &'c Client,
    done: &VideoDone,
    layout: &Layout<'_>,
    sinks: &mut Sinks<'c>,
) -> anyhow::Result<(u64, Option<String>)> {
    let output = &done.output;
    let (npy_key, frames_key) = (layout.embeddings(), layout.frames());
    let (jsonl_key, vtt_key) = (layout.captions_jsonl(), layout.captions_vtt());
    let mut written = 0u64;
    let mut compute_ms = 0u64;
    let mut model = None;
    let mut fetched = futures::stream::iter(0..done.jobs)
        .map(|seq| {
            let key = part_key(output, done.video_id, seq);
            async move {
                let bytes = store::get(client, &output.bucket, &key)
                    .await?
                    .with_context(|| {
                        format!("part {seq} of {} vanished during assembly", done.source)
                    })?;
                anyhow::Ok((seq, key, bytes))
            }
        })
        .buffered(PARTS_AHEAD);
    while let Some(next) = fetched.next().await {
        let (seq, key, bytes) = next?;
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
                sinks.embedding = Some(EmbeddingSink {
                    npy,
                    frames,
                    dim: part.dim,
                    rows: 0,
                });
            }
            for head in &part.heads {
                let key = layout.head(&head.name);
                let writer = ObjectWriter::new(client, &output.bucket, &key, "application/jsonl");
                sinks.heads.push((head.name.clone(), writer));
            }
            if !part.captions.is_empty() {
                let jsonl =
                    ObjectWriter::new(client, &output.bucket, &jsonl_key, "application/jsonl");
                let mut vtt = ObjectWriter::new(client, &output.bucket, &vtt_key, "text/vtt");
                vtt.write(Vtt::HEADER).await?;
                sinks.caption = Some(CaptionSink {
                    jsonl,
                    vtt,
                    cues: Vtt::default(),
                });
            }
        }
        ensure!(
            sinks.embedding.as_ref().map_or(0, |e| e.dim) == part.dim,
            "part {seq} has embedding dim {}, unlike part 0",
            part.dim
        );
        ensure!(
            sinks.caption.is_some() != part.captions.is_empty(),
            "part {seq} disagrees with part 0 on carrying captions"
        );
        ensure!(
            sinks
                .heads
                .iter()
                .map(|(n, _)| n.as_str())
                .eq(part.heads.iter().map(|h| h.name.as_str())),
            "part {seq} carries other heads than part 0"
        );
        for ((_, writer), head) in sinks.heads.iter_mut().zip(&part.heads) {
            writer
                .write(&head_lines(&part.frames, &head.values)?)
                .await?;
        }
        if let Some(sink) = &mut sinks.embedding {
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
                    heads: part
                        .heads
                        .iter()
                        .filter_map(|h| Some((h.name.as_str(), head_value(&h.values, i)?)))
                        .collect(),
                };
                let sep: &[u8] = if sink.rows == 0 { b"\n" } else { b",\n" };
                sink.frames.write(sep).await?;
                sink.frames.write(&serde_json::to_vec(&line)?).await?;
                sink.rows += 1;
            }
        }
        if let Some(sink) = &mut sinks.caption {
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
    Ok((compute_ms, model))
}

async fn assemble(client: &Client, done: &VideoDone) -> anyhow::Result<()> {
    ensure!(
        done.jobs > 0,
        "video done marker for {} counts no jobs",
        done.source
    );
    tracing::info!(video = %done.source, jobs = done.jobs, "assembling outputs");
    let output = &done.output;
    let layout = Layout {
        output,
        source_key: &done.source.key,
    };
    let mut sinks = Sinks::default();
    let (compute_ms, model) = match stream_parts(client, done, &layout, &mut sinks).await {
        Ok(streamed) => streamed,
        Err(e) => {
            sinks.abort().await;
            return Err(e);
        }
    };
    let outputs = sinks.finish().await?;
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
    store::put(
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
