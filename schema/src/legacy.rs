//! Wire versions 3 and 4, read but never written: jobs and results of
//! processes not upgraded yet, and parts a collector stored before its
//! upgrade, are still processed. Version 4 added `FrameResult::heads`;
//! version 5 added `VideoTask::payload`, `FrameJob::payload` and
//! `FrameJob::frame_bytes` and, after the existing variants,
//! `Sampling::Keyframes` and `Sampling::Scene` (bincode encodes enum
//! variants by position, so old samplings decode as they are). Only the
//! task, the job and the result need their old shapes here; the old ones
//! are raw.

use serde::Deserialize;
use uuid::Uuid;

use crate::{
    Frame, FrameJob, FrameResult, Label, Message, ObjectRef, Payload, Provenance, Sampling,
    VideoDone, VideoFailed, VideoTask,
};

pub const V3: u16 = 3;
pub const V4: u16 = 4;

#[derive(Deserialize)]
pub enum MessageV4 {
    VideoTask(VideoTaskV4),
    FrameJob(FrameJobV4),
    FrameResult(FrameResult),
    VideoDone(VideoDone),
    VideoFailed(VideoFailed),
}

/// `VideoTask` before `payload`.
#[derive(Deserialize)]
pub struct VideoTaskV4 {
    video_id: Uuid,
    source: ObjectRef,
    task: String,
    sampling: Sampling,
    output: ObjectRef,
    provenance: Provenance,
}

impl From<VideoTaskV4> for VideoTask {
    fn from(old: VideoTaskV4) -> Self {
        VideoTask {
            video_id: old.video_id,
            source: old.source,
            task: old.task,
            sampling: old.sampling,
            payload: Payload::Raw,
            output: old.output,
            provenance: old.provenance,
        }
    }
}

/// `FrameJob` before `payload`: always raw.
#[derive(Deserialize)]
pub struct FrameJobV4 {
    video_id: Uuid,
    task: String,
    source: ObjectRef,
    output: ObjectRef,
    seq: u32,
    width: u32,
    height: u32,
    frames: Vec<Frame>,
    #[serde(with = "serde_bytes")]
    pixels: Vec<u8>,
}

impl From<FrameJobV4> for FrameJob {
    fn from(old: FrameJobV4) -> Self {
        FrameJob {
            video_id: old.video_id,
            task: old.task,
            source: old.source,
            output: old.output,
            seq: old.seq,
            width: old.width,
            height: old.height,
            frames: old.frames,
            payload: Payload::Raw,
            pixels: old.pixels,
            frame_bytes: Vec::new(),
        }
    }
}

impl From<MessageV4> for Message {
    fn from(old: MessageV4) -> Self {
        match old {
            MessageV4::VideoTask(m) => Message::VideoTask(m.into()),
            MessageV4::FrameJob(m) => Message::FrameJob(m.into()),
            MessageV4::FrameResult(m) => Message::FrameResult(m),
            MessageV4::VideoDone(m) => Message::VideoDone(m),
            MessageV4::VideoFailed(m) => Message::VideoFailed(m),
        }
    }
}

#[derive(Deserialize)]
pub enum MessageV3 {
    VideoTask(VideoTaskV4),
    FrameJob(FrameJobV4),
    FrameResult(FrameResultV3),
    VideoDone(VideoDone),
    VideoFailed(VideoFailed),
}

#[derive(Deserialize)]
pub struct FrameResultV3 {
    video_id: Uuid,
    task: String,
    source: ObjectRef,
    output: ObjectRef,
    seq: u32,
    frames: Vec<Frame>,
    model: String,
    dim: u32,
    embeddings: Vec<f32>,
    labels: Vec<Vec<Label>>,
    captions: Vec<String>,
    compute_ms: u32,
}

impl From<MessageV3> for Message {
    fn from(old: MessageV3) -> Self {
        match old {
            MessageV3::VideoTask(m) => Message::VideoTask(m.into()),
            MessageV3::FrameJob(m) => Message::FrameJob(m.into()),
            MessageV3::FrameResult(r) => Message::FrameResult(FrameResult {
                video_id: r.video_id,
                task: r.task,
                source: r.source,
                output: r.output,
                seq: r.seq,
                frames: r.frames,
                model: r.model,
                dim: r.dim,
                embeddings: r.embeddings,
                labels: r.labels,
                captions: r.captions,
                compute_ms: r.compute_ms,
                heads: Vec::new(),
            }),
            MessageV3::VideoDone(m) => Message::VideoDone(m),
            MessageV3::VideoFailed(m) => Message::VideoFailed(m),
        }
    }
}
