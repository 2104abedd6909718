use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Done,
    Failed,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Timings {
    pub decode_ms: u64,
    /// Sum over this video's jobs of the model time of the batch each rode
    /// in; batches shared with other videos count in full for each.
    pub compute_ms: u64,
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
    #[serde(default)]
    pub timings: Timings,
    #[serde(default)]
    pub outputs: Vec<String>,
    pub finished_at_unix_ms: u64,
}

pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
