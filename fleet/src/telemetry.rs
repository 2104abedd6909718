use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::{LogFormat, metrics::FailureCounter};

/// Installs the global `tracing` subscriber, writing to stderr so that
/// stdout stays clean for command output. Colour only when stderr is a
/// terminal and `NO_COLOR` is unset: a log file or pipe gets plain text.
/// Failure events are counted whatever the log filter lets through.
pub fn init(format: LogFormat) {
    // lapin logs every channel the broker closes at ERROR, including the
    // RESOURCE_LOCKED a standby watcher gets each time it tries the lease.
    // Every such close also reaches our code as an error, which logs it
    // with context, so lapin's own line is off unless RUST_LOG asks for it.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,lapin::channel=off"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let text = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Text => text.with_filter(filter).boxed(),
        LogFormat::Json => text.json().flatten_event(true).with_filter(filter).boxed(),
    };
    tracing_subscriber::registry()
        .with(log)
        .with(FailureCounter::layer())
        .init();
}
