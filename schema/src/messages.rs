use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An object, or a prefix, in S3-compatible storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Which decoded frames become model input.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Sampling {
    /// Every decoded frame.
    All,
    /// The first frame at or after each multiple of `1 / fps` seconds.
    Fps(f64),
    /// Frames 0, N, 2N, … by `Frame::index`.
    EveryNth(u32),
    /// Intra-coded frames only (I pictures): the frames a decoder can
    /// rebuild on their own, which is all it decodes in this mode.
    Keyframes,
    /// The first frame, then each frame whose scene-change score against
    /// the frame before it exceeds this threshold, in (0, 1).
    Scene(f64),
}

/// One video to process: published on `<ns>.videos`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoTask {
    pub video_id: Uuid,
    pub source: ObjectRef,
    pub task: String,
    pub sampling: Sampling,
    /// How the producer sends this video's frames to the workers.
    pub payload: Payload,
    /// Prefix under which the collector writes `embeddings/`, `status/`, ….
    pub output: ObjectRef,
    pub provenance: Provenance,
}

/// Which bytes of the source and which pipeline a run is for. Recorded in
/// the video's status, so discovery can tell a video already done from one
/// whose object or pipeline changed since.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The object's ETag when it was queued; `None` if the store gave none.
    pub etag: Option<String>,
    /// Hash of the pipeline settings (task, model, sampling, prompt, …).
    pub fingerprint: String,
}

/// A sampled frame's position in its video.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Position among the video's frames in presentation order, counting
    /// every frame, sampled or not. Counted from the frames decoded, or,
    /// where the producer skips decoding frames it will not sample (`Fps`,
    /// `Keyframes`), from the container's packet timestamps; the two agree
    /// wherever each packet holds one frame.
    pub index: u64,
    /// Presentation time in seconds from the stream start.
    pub pts_s: f64,
}

/// A prebatch of frames of one video, already at the task's input size.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameJob {
    pub video_id: Uuid,
    pub task: String,
    pub source: ObjectRef,
    pub output: ObjectRef,
    /// 0-based position of this job among the video's jobs.
    pub seq: u32,
    pub width: u32,
    pub height: u32,
    pub frames: Vec<Frame>,
    /// How `pixels` travel.
    pub payload: Payload,
    /// Packed RGB24, frame after frame, row-major, as `payload` encodes it.
    #[serde(with = "serde_bytes")]
    pub pixels: Vec<u8>,
    /// For `Payload::Jpeg`, each frame's JPEG length in `pixels`, in order;
    /// empty otherwise.
    pub frame_bytes: Vec<u32>,
}

/// The encoding of frame pixels on the wire, chosen per pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// Packed RGB24 as it is.
    Raw,
    /// Packed RGB24 in one zstd frame: lossless.
    Zstd,
    /// One baseline JPEG per frame at this quality (1–100): lossy, so the
    /// model sees slightly different pixels than with `Raw`.
    Jpeg(u8),
}

// Frame buffers never reach logs.
impl fmt::Debug for FrameJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameJob")
            .field("video_id", &self.video_id)
            .field("task", &self.task)
            .field("source", &self.source)
            .field("seq", &self.seq)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("frames", &self.frames.len())
            .field("pixels", &format_args!("<{} bytes>", self.pixels.len()))
            .finish()
    }
}

/// One class of a classification head, with its probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub class: u32,
    pub name: String,
    pub score: f32,
}

/// The model's output for one `FrameJob`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameResult {
    pub video_id: Uuid,
    pub task: String,
    pub source: ObjectRef,
    pub output: ObjectRef,
    pub seq: u32,
    pub frames: Vec<Frame>,
    pub model: String,
    /// Length of one embedding; `embeddings` holds `frames.len() * dim`
    /// values. 0 for tasks that only caption.
    pub dim: u32,
    pub embeddings: Vec<f32>,
    /// Top-k labels per frame; empty when the task has no classification head.
    pub labels: Vec<Vec<Label>>,
    /// One caption per frame; empty for tasks that do not caption.
    pub captions: Vec<String>,
    /// Time the model spent on the batch this job rode in.
    pub compute_ms: u32,
    /// What each head the worker runs said about each frame.
    pub heads: Vec<HeadOutputs>,
}

/// One head's outputs for every frame of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadOutputs {
    /// The head's name; the collector writes `heads/NAME/KEY.jsonl`.
    pub name: String,
    pub values: HeadValues,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HeadValues {
    /// The most probable class of each frame, with its probability.
    Classes(Vec<Label>),
    /// One number per frame, in the head's unit.
    Numbers(Vec<f32>),
}

impl HeadValues {
    pub fn len(&self) -> usize {
        match self {
            HeadValues::Classes(v) => v.len(),
            HeadValues::Numbers(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for FrameResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameResult")
            .field("video_id", &self.video_id)
            .field("task", &self.task)
            .field("seq", &self.seq)
            .field("frames", &self.frames.len())
            .field("dim", &self.dim)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// Sent by the producer once every `FrameJob` of a video is confirmed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoDone {
    pub video_id: Uuid,
    pub task: String,
    pub source: ObjectRef,
    pub output: ObjectRef,
    /// Number of jobs (seq 0..jobs) the collector must see.
    pub jobs: u32,
    /// Sampled frames across all jobs.
    pub frames: u64,
    /// Frames decoded, sampled or not.
    pub decoded: u64,
    pub decode_ms: u64,
    pub coverage: Coverage,
    pub provenance: Provenance,
}

/// How much of the video the decoded frames cover, against what the
/// container declares.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Packets the demuxer or decoder rejected (their frames are missing)
    /// plus frames the decoder flagged as damaged (concealed).
    pub decode_errors: u64,
    /// The video stream's duration as the container declares it, if it does.
    pub declared_s: Option<f64>,
    /// From the stream's start to the end of the last decoded frame.
    pub covered_s: f64,
    /// Why the outputs do not cover the whole video; `None` when they do.
    pub incomplete: Option<String>,
}

/// Sent by the producer when a video cannot be opened or decoded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoFailed {
    pub video_id: Uuid,
    pub task: String,
    pub source: ObjectRef,
    pub output: ObjectRef,
    pub reason: String,
    pub provenance: Provenance,
}

/// Everything that travels. One enum so that a queue carrying several kinds
/// (the results queue) decodes with one call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    VideoTask(VideoTask),
    FrameJob(FrameJob),
    FrameResult(FrameResult),
    VideoDone(VideoDone),
    VideoFailed(VideoFailed),
}

impl Message {
    pub fn kind(&self) -> &'static str {
        match self {
            Message::VideoTask(_) => "video_task",
            Message::FrameJob(_) => "frame_job",
            Message::FrameResult(_) => "frame_result",
            Message::VideoDone(_) => "video_done",
            Message::VideoFailed(_) => "video_failed",
        }
    }
}
