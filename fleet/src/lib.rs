//! What every Framefleet process shares: the flags that locate the broker
//! and the store, logging, the queue topology, confirmed publishing, and
//! the layout and formats of the outputs in the bucket.

mod args;
mod broker;
mod deadletter;
pub mod head_lines;
pub mod layout;
mod lease;
pub mod metrics;
pub mod npy;
pub mod payload;
mod publish;
mod reconnect;
pub mod retry;
pub mod settle;
pub mod status;
pub mod store;
pub mod telemetry;
mod topology;

pub use args::{BrokerArgs, LogArgs, LogFormat};
pub use broker::{BrokerError, Persistence, connect, redact_url};
pub use deadletter::{REASON_HEADER, dead_letter};
pub use lease::Lease;
pub use publish::{PendingConfirm, PublishError, Publisher};
pub use reconnect::reconnecting;
pub use topology::Topology;
