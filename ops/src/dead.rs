//! `ops dead`: what is in the dead-letter queue, why, and getting it back.
//!
//! Messages are browsed with `basic.get` and left unacked; closing the
//! channel returns every one not explicitly acked, so listing and peeking
//! change nothing. Requeue republishes to the fleet's jobs exchange under
//! the message's original routing key, with a confirm, and only then acks
//! the dead copy: a crash in between leaves a duplicate, never a loss.

use std::{collections::BTreeMap, io::Write};

use anyhow::Context;
use lapin::{
    Channel, Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueuePurgeOptions},
    types::{AMQPValue, FieldTable, ShortString},
};
use serde::Serialize;

use fleet::{Publisher, REASON_HEADER, Topology};

/// Header Framefleet puts beside the reason: the queue the message left.
const QUEUE_HEADER: &str = "x-ff-queue";

/// Headers that describe a past death; a requeued message starts afresh.
fn is_death_header(name: &str) -> bool {
    name == REASON_HEADER
        || name == QUEUE_HEADER
        || name == "x-death"
        || name == "x-delivery-count"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
}

/// One dead letter, as `list` shows it.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    /// 1-based position in the dead-letter queue.
    pub n: usize,
    /// Queue it was dead-lettered from.
    pub queue: String,
    /// Framefleet's reason, or the broker's (`delivery_limit`, `rejected`, …).
    pub reason: String,
    /// Message kind (`video_task`, `frame_job`, …), or `undecodable`.
    pub kind: String,
    /// The video it is about, if it decodes.
    pub video: Option<String>,
    pub routing_key: String,
    pub bytes: usize,
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The broker's own record of the first death: `x-death[0]`.
fn first_death(headers: &FieldTable) -> Option<&FieldTable> {
    match headers.inner().get("x-death")? {
        AMQPValue::FieldArray(deaths) => match deaths.as_slice().first()? {
            AMQPValue::FieldTable(death) => Some(death),
            _ => None,
        },
        _ => None,
    }
}

fn describe(n: usize, delivery: &Delivery) -> DeadLetter {
    let empty = FieldTable::default();
    let headers = delivery.properties.headers().as_ref().unwrap_or(&empty);
    let header = |name: &str| headers.inner().get(name).and_then(text);
    let death = first_death(headers);
    let death_field = |name: &str| death.and_then(|d| d.inner().get(name)).and_then(text);
    let (kind, video) = match schema::decode(&delivery.data) {
        Ok(message) => {
            let video = match &message {
                schema::Message::VideoTask(m) => Some(m.source.to_string()),
                schema::Message::FrameJob(m) => Some(m.source.to_string()),
                schema::Message::FrameResult(m) => Some(m.source.to_string()),
                schema::Message::VideoDone(m) => Some(m.source.to_string()),
                schema::Message::VideoFailed(m) => Some(m.source.to_string()),
            };
            (message.kind().to_owned(), video)
        }
        Err(_) => ("undecodable".to_owned(), None),
    };
    DeadLetter {
        n,
        queue: header(QUEUE_HEADER)
            .or_else(|| death_field("queue"))
            .unwrap_or_else(|| "?".into()),
        reason: header(REASON_HEADER)
            .or_else(|| death_field("reason"))
            .unwrap_or_else(|| "?".into()),
        kind,
        video,
        routing_key: delivery.routing_key.to_string(),
        bytes: delivery.data.len(),
    }
}

/// Which dead letters a command acts on.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    /// Reason contains this text.
    Reason(String),
    /// These positions (1-based, as `list` numbers them).
    Positions(Vec<usize>),
}

impl Selection {
    fn matches(&self, letter: &DeadLetter) -> bool {
        match self {
            Selection::All => true,
            Selection::Reason(r) => letter.reason.contains(r.as_str()),
            Selection::Positions(p) => p.contains(&letter.n),
        }
    }
}

pub struct DeadQueue {
    connection: Connection,
    channel: Channel,
    topology: Topology,
}

impl DeadQueue {
    pub async fn open(broker: &fleet::BrokerArgs, namespace: &str) -> anyhow::Result<Self> {
        let connection = fleet::connect(broker, "ops dead", fleet::Persistence::OneShot).await?;
        let channel = connection.create_channel().await?;
        Ok(Self {
            connection,
            channel,
            topology: Topology::new(namespace),
        })
    }

    /// Every dead letter, unacked on this channel until `close`.
    async fn browse(&self) -> anyhow::Result<Vec<(DeadLetter, Delivery)>> {
        let queue = self.topology.dead_queue();
        let declared = self
            .channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("no dead-letter queue {queue}"))?;
        let mut out = Vec::new();
        // Only what was there at the start: a busy fleet adding more must
        // not keep us reading forever.
        for n in 1..=declared.message_count() as usize {
            let Some(got) = self
                .channel
                .basic_get(queue.as_str().into(), BasicGetOptions::default())
                .await?
            else {
                break;
            };
            out.push((describe(n, &got.delivery), got.delivery));
        }
        Ok(out)
    }

    pub async fn list(self) -> anyhow::Result<Vec<DeadLetter>> {
        let letters = self.browse().await?.into_iter().map(|(l, _)| l).collect();
        self.close().await;
        Ok(letters)
    }

    /// The n-th dead letter in full: headers and the decoded message.
    pub async fn peek(self, n: usize) -> anyhow::Result<serde_json::Value> {
        let letters = self.browse().await?;
        let found = letters.into_iter().find(|(l, _)| l.n == n);
        let result = match found {
            None => Err(anyhow::anyhow!("there is no dead letter #{n}")),
            Some((letter, delivery)) => {
                let headers: BTreeMap<String, String> = delivery
                    .properties
                    .headers()
                    .as_ref()
                    .map(|h| {
                        h.inner()
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), text(v).unwrap_or_else(|| format!("{v:?}")))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let message = match schema::decode(&delivery.data) {
                    Ok(m) => format!("{m:#?}"),
                    Err(e) => format!("undecodable: {:#}", anyhow::Error::from(e)),
                };
                Ok(serde_json::json!({
                    "letter": letter,
                    "headers": headers,
                    "message": message,
                }))
            }
        };
        self.close().await;
        result
    }

    /// Puts the selected dead letters back on their queues; returns how many.
    pub async fn requeue(self, selection: &Selection) -> anyhow::Result<usize> {
        let publisher = Publisher::open(&self.connection, &self.topology.jobs_exchange()).await?;
        let mut count = 0;
        for (letter, delivery) in self.browse().await? {
            if !selection.matches(&letter) {
                continue;
            }
            let headers: BTreeMap<ShortString, AMQPValue> = delivery
                .properties
                .headers()
                .as_ref()
                .map(|h| {
                    h.inner()
                        .iter()
                        .filter(|(k, _)| !is_death_header(k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            publisher
                .publish(&letter.routing_key, &delivery.data, headers.into())
                .await
                .with_context(|| format!("requeueing dead letter #{}", letter.n))?;
            delivery.acker.ack(BasicAckOptions::default()).await?;
            count += 1;
        }
        self.close().await;
        Ok(count)
    }

    /// Deletes the selected dead letters; returns how many.
    pub async fn purge(self, selection: &Selection) -> anyhow::Result<usize> {
        let count = if matches!(selection, Selection::All) {
            self.channel
                .queue_purge(
                    self.topology.dead_queue().as_str().into(),
                    QueuePurgeOptions::default(),
                )
                .await? as usize
        } else {
            let mut count = 0;
            for (letter, delivery) in self.browse().await? {
                if selection.matches(&letter) {
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                    count += 1;
                }
            }
            count
        };
        self.close().await;
        Ok(count)
    }

    /// Returns every browsed, unacked message to the queue.
    async fn close(self) {
        self.channel.close(200, "done".into()).await.ok();
        self.connection.close(200, "done".into()).await.ok();
    }
}

/// `ops dead list`, 80 columns wide: the reason gets what is left.
pub fn write_table(
    out: &mut impl Write,
    letters: &[DeadLetter],
    namespace: &str,
) -> std::io::Result<()> {
    if letters.is_empty() {
        return writeln!(out, "no dead letters");
    }
    writeln!(
        out,
        "{:>4}  {:<22}  {:<12}  REASON / VIDEO",
        "#", "QUEUE", "KIND"
    )?;
    for l in letters {
        let queue = l
            .queue
            .strip_prefix(namespace)
            .and_then(|q| q.strip_prefix('.'))
            .unwrap_or(&l.queue);
        writeln!(
            out,
            "{:>4}  {:<22}  {:<12}  {}",
            l.n,
            clip(queue, 22),
            clip(&l.kind, 12),
            clip(&l.reason, 34)
        )?;
        if let Some(video) = &l.video {
            writeln!(out, "{:>4}  {:<22}  {:<12}  {}", "", "", "", video)?;
        }
    }
    Ok(())
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}
