use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Done,
    /// Outputs were written, but they miss part of the video (truncated
    /// file, corrupt packets); `error` says what and why.
    Incomplete,
    Failed,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Timings {
    pub decode_ms: u64,
    /// Sum over this video's jobs of the model time of the batch each rode
    /// in; batches shared with other videos count in full for each.
    pub compute_ms: u64,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Done => "done",
            State::Incomplete => "incomplete",
            State::Failed => "failed",
        }
    }
}

/// `status/<key>.json`: written last, so its presence means the outputs
/// beside it are complete.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    pub video_id: Uuid,
    pub source: String,
    pub task: String,
    #[serde(default)]
    pub model: Option<String>,
    pub frames: u64,
    #[serde(default)]
    pub decoded: u64,
    #[serde(default)]
    pub jobs: u32,
    #[serde(default)]
    pub error: Option<String>,
    /// What the decoded frames cover against the container's declaration;
    /// absent for a video that could not be decoded.
    #[serde(default)]
    pub coverage: Option<schema::Coverage>,
    #[serde(default)]
    pub timings: Timings,
    #[serde(default)]
    pub outputs: Vec<String>,
    /// The source object's ETag this run read; discovery compares it with
    /// the object's current one.
    #[serde(default)]
    pub etag: Option<String>,
    /// Hash of the pipeline settings the run used (task, model, sampling,
    /// prompt, token limit, output prefix).
    #[serde(default)]
    pub fingerprint: Option<String>,
    pub finished_at_unix_ms: u64,
}

/// `.framefleet/claims/<key>.json`: written once a run's task is confirmed
/// by the broker, deleted by the collector when the run's status is
/// written. It is what stops the next poll from queueing the same run again
/// while it is still on its way through the fleet.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claim {
    pub video_id: Uuid,
    pub etag: Option<String>,
    pub fingerprint: String,
    pub claimed_at_unix_ms: u64,
}

pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
