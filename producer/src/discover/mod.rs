//! Finding videos to process: `submit` (one pass) and `watch` (polling
//! plus S3 event notifications), sharing one skip rule (`enqueue`).

mod enqueue;
mod events;
mod pipeline;
pub mod watch;

pub use enqueue::{Candidate, ClaimArgs, Enqueuer, Outcome};
pub use pipeline::{Pipeline, PipelineArgs, parse_sampling, sampling_text};
