//! Every message that crosses RabbitMQ, and the only place that knows how
//! they are encoded.
//!
//! A payload is `MAGIC ++ VERSION (u16 LE) ++ bincode(Message)`. bincode is not
//! self-describing, so the version tag is what lets a worker tell "a newer
//! producer sent this" apart from "these bytes are corrupt".

mod codec;
mod legacy;
mod limits;
mod messages;
mod task;
mod validate;

pub use codec::{DecodeError, EncodeError, MAGIC, VERSION, decode, encode};
pub use limits::Limits;
pub use messages::{
    Coverage, Frame, FrameJob, FrameResult, HeadOutputs, HeadValues, Label, Message, ObjectRef,
    Payload, Provenance, Sampling, VideoDone, VideoFailed, VideoTask,
};
pub use task::{Fit, TaskSpec, known_task, task_names};
pub use validate::ValidationError;
