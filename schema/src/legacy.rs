//! Wire versions 3 and 4, read but never written: results of workers that
//! have not been upgraded yet, and parts a collector stored before its
//! upgrade, still assemble. Version 4 added `FrameResult::heads`; every
//! other message is unchanged, and bincode encodes enum variants by
//! position, so only the result needs its old shape here. Version 5 added
//! `Sampling::Keyframes` and `Sampling::Scene` after the existing variants,
//! so version 4 bytes decode as they are.

use serde::Deserialize;
use uuid::Uuid;

use crate::{
    Frame, FrameJob, FrameResult, Label, Message, ObjectRef, VideoDone, VideoFailed, VideoTask,
};

pub const V3: u16 = 3;
pub const V4: u16 = 4;

#[derive(Deserialize)]
pub enum MessageV3 {
    VideoTask(VideoTask),
    FrameJob(FrameJob),
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
            MessageV3::VideoTask(m) => Message::VideoTask(m),
            MessageV3::FrameJob(m) => Message::FrameJob(m),
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
