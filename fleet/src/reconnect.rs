//! Running a service again on a fresh connection when the broker's is lost.
//!
//! The fleet does not use lapin's own connection recovery: in lapin 4.12.3
//! (the newest release) it hung for good in two ways when the broker
//! restarted here. A recovering io loop waited forever on the dead socket
//! when frames were queued for it as it died (the connection stayed
//! `Reconnecting`, lapin#450); and a collector whose acks were refused as
//! the socket died never saw its consumer deliver or fail again (seen in
//! CI). Neither logged anything after the loss.
//!
//! Recovery here has one path instead. Everything built on a connection
//! (channels, consumers, publishers, leases) belongs to one run of the
//! service. Without lapin's recovery, a lost connection fails every
//! consumer and pending confirm on it at once, so the run unwinds; the
//! broker requeues whatever the connection held unacked, every output is
//! idempotent, and the service runs again on a new connection. What
//! outlives a connection (a loaded model, store clients) stays with the
//! caller.

use std::time::{Duration, Instant};

use lapin::Connection;
use tokio_util::sync::CancellationToken;

use crate::{BrokerArgs, Persistence, connect};

/// How long the broker may stay unreachable before the process gives up
/// and leaves the restart to its supervisor; `connect` itself waits about
/// as long for a broker that refuses TCP.
const OUTAGE: Duration = Duration::from_secs(600);
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Runs `service` on a connection named `name`, and again on a new one
/// each time the connection is lost, until it ends with the connection
/// still up (its own outcome) or `stop` fires. The service must return
/// once its connection is gone; with lapin's recovery off, every consumer
/// and publish on it fails when it goes.
pub async fn reconnecting(
    broker: &BrokerArgs,
    name: &str,
    stop: &CancellationToken,
    mut service: impl AsyncFnMut(&Connection) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // Exposed from the start, so that a rate over it reads 0, not nothing.
    metrics::counter!(crate::metrics::BROKER_RECONNECTS).increment(0);
    let mut connection = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        first = connect(broker, name, Persistence::Service) => first?,
    };
    loop {
        let outcome = service(&connection).await;
        if stop.is_cancelled() || connection.status().connected() {
            connection.close(200, "stopped".into()).await.ok();
            return outcome;
        }
        let cause = match &outcome {
            Err(e) => format!("{e:#}"),
            Ok(()) => "the broker ended the subscription".to_owned(),
        };
        tracing::warn!(
            cause,
            "lost the broker connection; reconnecting (the broker requeues what this process held unacked)"
        );
        metrics::counter!(crate::metrics::BROKER_RECONNECTS).increment(1);
        match reconnect(broker, name, stop).await? {
            Some(fresh) => connection = fresh,
            None => return Ok(()),
        }
    }
}

/// A new connection, or `None` when `stop` fired first. Gives up after
/// `OUTAGE` of failed tries.
async fn reconnect(
    broker: &BrokerArgs,
    name: &str,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Connection>> {
    let started = Instant::now();
    let mut wait = RETRY_MIN;
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            attempt = connect(broker, name, Persistence::Service) => attempt,
        };
        match attempt {
            Ok(connection) => {
                tracing::info!(
                    down_ms = started.elapsed().as_millis() as u64,
                    "reconnected to the broker"
                );
                return Ok(Some(connection));
            }
            // A broker that is still booting accepts TCP and then closes
            // the handshake: try again for as long as an outage may last.
            Err(e) if started.elapsed() < OUTAGE => {
                tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, "reconnecting failed, retrying");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
            Err(e) => return Err(e.into()),
        }
    }
}
