//! A guard against lapin's connection recovery stalling for good.
//!
//! lapin 4.12.3 (the latest) can leave a recovering connection waiting
//! forever. When the socket dies with frames still queued for it (a worker
//! acking and publishing as the broker stops), its io loop counts those
//! unsendable frames as work left (`should_continue`). It waits on the
//! dead socket and never reaches its reconnect: the connection stays
//! `Reconnecting` with the broker up again. Found by restarting the broker
//! moments after a worker started (RELIABILITY.md).
//!
//! While the connection is recovering, the watchdog probes the broker's
//! port with a plain TCP connect once a second. If the broker has accepted
//! connections for `STALL` and ours is still not back, lapin is stuck (or
//! the broker keeps refusing our login): the process logs why and exits 1,
//! so that its supervisor starts it again. Nothing is lost: the broker
//! already requeued every delivery the dead connection held, and every
//! output is idempotent.

use std::time::{Duration, Instant};

use lapin::ConnectionStatus;

/// How long the broker may be reachable while our connection stays down.
/// lapin's own reconnect waits at most 5 s between attempts.
const STALL: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_secs(1);

/// Watches `status` for as long as the connection lives. `host` and `port`
/// are the broker's, from the AMQP URL.
pub(crate) fn watch(status: ConnectionStatus, host: String, port: u16) {
    tokio::spawn(async move {
        let mut reachable_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(TICK).await;
            // Our own shutdown, or lapin gave up and said so to its users.
            if status.closing() || status.closed() || status.errored() {
                return;
            }
            if !status.reconnecting() {
                reachable_since = None;
                continue;
            }
            let probe = tokio::net::TcpStream::connect((host.as_str(), port));
            if !matches!(tokio::time::timeout(TICK, probe).await, Ok(Ok(_))) {
                reachable_since = None;
                continue;
            }
            let since = *reachable_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= STALL {
                tracing::error!(
                    broker = format!("{host}:{port}"),
                    stalled_s = since.elapsed().as_secs(),
                    "the broker accepts connections but ours has not recovered: lapin's recovery is stuck (or the broker keeps refusing our login); exiting so that the supervisor restarts this process (the broker redelivers what it held)"
                );
                std::process::exit(1);
            }
        }
    });
}
