use std::io::Write;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The management API's view of one queue; absent statistics read as zero
/// (a queue nobody has used yet has none).
#[derive(Debug, Deserialize)]
struct ApiQueue {
    name: String,
    #[serde(default)]
    messages_ready: u64,
    #[serde(default)]
    messages_unacknowledged: u64,
    #[serde(default)]
    consumers: u64,
    #[serde(default)]
    message_stats: Option<Stats>,
}

#[derive(Debug, Default, Deserialize)]
struct Stats {
    #[serde(default)]
    publish_details: Option<Rate>,
    #[serde(default)]
    deliver_get_details: Option<Rate>,
    #[serde(default)]
    ack_details: Option<Rate>,
}

#[derive(Debug, Deserialize)]
struct Rate {
    rate: f64,
}

fn rate(r: &Option<Rate>) -> f64 {
    r.as_ref().map_or(0.0, |r| r.rate)
}

/// One line of `ops status`.
#[derive(Debug, Serialize)]
pub struct QueueStatus {
    pub queue: String,
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u64,
    pub publish_per_s: f64,
    pub deliver_per_s: f64,
    pub ack_per_s: f64,
    /// Seconds until the ready messages are drained at the current ack
    /// rate; `None` while nothing is acked.
    pub eta_s: Option<f64>,
}

/// Ready ÷ ack rate; 0 for an empty queue, unknown while nothing is acked.
pub fn eta_s(ready: u64, ack_per_s: f64) -> Option<f64> {
    if ready == 0 {
        Some(0.0)
    } else if ack_per_s > 1e-3 {
        Some(ready as f64 / ack_per_s)
    } else {
        None
    }
}

/// `1:02:03`, `4:05`, or `-` when unknown.
pub fn format_eta(eta_s: Option<f64>) -> String {
    let Some(s) = eta_s.filter(|s| s.is_finite()) else {
        return "-".into();
    };
    let s = s.round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

pub struct Api {
    client: reqwest::Client,
    base: reqwest::Url,
    user: String,
    password: Option<String>,
    vhost: String,
}

impl Api {
    pub fn new(url: &str, vhost: &str) -> anyhow::Result<Self> {
        let mut base = reqwest::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
        let user = base.username().to_owned();
        let password = base.password().map(str::to_owned);
        // Credentials travel as a header, never in URLs that reach errors.
        base.set_username("").ok();
        base.set_password(None).ok();
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()?,
            base,
            user,
            password,
            vhost: vhost.to_owned(),
        })
    }

    /// Every queue of the fleet, sorted by name.
    pub async fn queues(&self, namespace: &str) -> anyhow::Result<Vec<QueueStatus>> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("{} cannot hold a path", self.base))?
            .extend(["api", "queues", &self.vhost]);
        let response = self
            .client
            .get(url.clone())
            .basic_auth(&self.user, self.password.as_deref())
            .send()
            .await
            .with_context(|| format!("cannot reach the management API at {url}"))?;
        let code = response.status();
        anyhow::ensure!(code.is_success(), "management API at {url} answered {code}");
        let queues: Vec<ApiQueue> = response
            .json()
            .await
            .context("management API sent unexpected JSON")?;
        let prefix = format!("{namespace}.");
        let mut out: Vec<QueueStatus> = queues
            .into_iter()
            // Watch leases are empty locks, not work.
            .filter(|q| q.name.starts_with(&prefix) && !q.name.ends_with(".lease"))
            .map(|q| {
                let stats = q.message_stats.unwrap_or_default();
                let ack_per_s = rate(&stats.ack_details);
                QueueStatus {
                    eta_s: eta_s(q.messages_ready, ack_per_s),
                    queue: q.name,
                    ready: q.messages_ready,
                    unacked: q.messages_unacknowledged,
                    consumers: q.consumers,
                    publish_per_s: rate(&stats.publish_details),
                    deliver_per_s: rate(&stats.deliver_get_details),
                    ack_per_s,
                }
            })
            .collect();
        out.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(out)
    }
}

/// The table, 80 columns wide for the standard queues: names lose the
/// namespace prefix.
pub fn write_table(
    out: &mut impl Write,
    queues: &[QueueStatus],
    namespace: &str,
) -> std::io::Result<()> {
    let short = |q: &str| -> String {
        q.strip_prefix(namespace)
            .and_then(|q| q.strip_prefix('.'))
            .unwrap_or(q)
            .to_owned()
    };
    let width = queues
        .iter()
        .map(|q| short(&q.queue).len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{:<width$}  {:>7}  {:>7}  {:>4}  {:>7}  {:>7}  {:>8}",
        "QUEUE", "READY", "UNACKED", "CONS", "IN/s", "ACK/s", "ETA"
    )?;
    for q in queues {
        writeln!(
            out,
            "{:<width$}  {:>7}  {:>7}  {:>4}  {:>7.1}  {:>7.1}  {:>8}",
            short(&q.queue),
            q.ready,
            q.unacked,
            q.consumers,
            q.publish_per_s,
            q.ack_per_s,
            format_eta(q.eta_s)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta() {
        assert_eq!(eta_s(0, 0.0), Some(0.0));
        assert_eq!(eta_s(100, 0.0), None);
        assert_eq!(eta_s(100, 4.0), Some(25.0));
        assert_eq!(format_eta(None), "-");
        assert_eq!(format_eta(Some(25.0)), "0:25");
        assert_eq!(format_eta(Some(3723.4)), "1:02:03");
    }
}
