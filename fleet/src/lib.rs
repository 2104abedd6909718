//! What every Framefleet process shares: the flags that locate the broker,
//! logging, the queue topology, and confirmed publishing.

mod args;
mod broker;
mod deadletter;
mod lease;
pub mod metrics;
mod publish;
pub mod retry;
pub mod settle;
pub mod telemetry;
mod topology;

pub use args::{BrokerArgs, LogArgs, LogFormat};
pub use broker::{BrokerError, Persistence, connect, redact_url};
pub use deadletter::{REASON_HEADER, dead_letter};
pub use lease::Lease;
pub use publish::{PendingConfirm, PublishError, Publisher};
pub use topology::Topology;
