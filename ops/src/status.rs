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
            .filter(|q| q.name.starts_with(&prefix))
            .map(|q| {
                let stats = q.message_stats.unwrap_or_default();
                QueueStatus {
                    queue: q.name,
                    ready: q.messages_ready,
                    unacked: q.messages_unacknowledged,
                    consumers: q.consumers,
                    publish_per_s: rate(&stats.publish_details),
                    deliver_per_s: rate(&stats.deliver_get_details),
                    ack_per_s: rate(&stats.ack_details),
                }
            })
            .collect();
        out.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(out)
    }
}

pub fn write_table(out: &mut impl Write, queues: &[QueueStatus]) -> std::io::Result<()> {
    let width = queues
        .iter()
        .map(|q| q.queue.len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{:<width$}  {:>8}  {:>8}  {:>9}  {:>9}  {:>9}  {:>9}",
        "QUEUE", "READY", "UNACKED", "CONSUMERS", "IN/s", "OUT/s", "ACK/s"
    )?;
    for q in queues {
        writeln!(
            out,
            "{:<width$}  {:>8}  {:>8}  {:>9}  {:>9.1}  {:>9.1}  {:>9.1}",
            q.queue, q.ready, q.unacked, q.consumers, q.publish_per_s, q.deliver_per_s, q.ack_per_s
        )?;
    }
    Ok(())
}
