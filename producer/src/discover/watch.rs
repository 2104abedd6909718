//! `producer watch`: a video dropped in the bucket gets processed, once.
//!
//! One watcher per (source, pipeline) is active at a time: it holds a
//! broker lease (`fleet::Lease`), and any other watcher for the same pair
//! stands by until the lease frees. The active one polls the prefix every
//! `--interval`, one listing page in memory at a time, and, when
//! `--events-exchange` is set, also consumes S3 event notifications, so a
//! store that announces uploads gets them processed without waiting for the
//! next poll. Both paths go through `Enqueuer::consider`, one at a time.

use std::{num::NonZeroUsize, time::Duration};

use futures::StreamExt;
use lapin::{
    Channel, Connection, ExchangeKind,
    message::Delivery,
    options::{BasicConsumeOptions, BasicQosOptions},
};
use lru::LruCache;
use schema::ObjectRef;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use fleet::{Lease, Publisher, Topology};

use super::{Candidate, Enqueuer, Outcome, events};
use fleet::store;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum EventsExchangeKind {
    Topic,
    Fanout,
    Direct,
}

#[derive(Clone, Debug, clap::Args)]
pub struct WatchArgs {
    /// Time between two polls of the prefix, e.g. 10s or 5m.
    #[arg(long, env = "FF_WATCH_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// File extensions that count as video (case-insensitive); other
    /// objects are reported once and left alone.
    #[arg(
        long,
        env = "FF_VIDEO_EXTENSIONS",
        value_delimiter = ',',
        default_value = "mp4,m4v,mov,mkv,webm,avi,mpg,mpeg,ts,mts,m2ts,flv,wmv,ogv,3gp,mxf,y4m"
    )]
    pub extensions: Vec<String>,

    /// Objects remembered as settled (done, or not a video) so that polls
    /// skip them without a request; bounds the watcher's memory.
    #[arg(long, env = "FF_WATCH_REMEMBER", default_value_t = NonZeroUsize::new(100_000).expect("non-zero"))]
    pub remember: NonZeroUsize,

    /// Exchange the store publishes S3 event notifications to (MinIO,
    /// Ceph RGW AMQP targets). Polling continues beside it.
    #[arg(long, env = "FF_EVENTS_EXCHANGE")]
    pub events_exchange: Option<String>,

    /// Type of --events-exchange, declared if it does not exist.
    #[arg(
        long,
        env = "FF_EVENTS_EXCHANGE_TYPE",
        value_enum,
        default_value = "topic"
    )]
    pub events_exchange_type: EventsExchangeKind,

    /// Binding key on --events-exchange.
    #[arg(long, env = "FF_EVENTS_ROUTING_KEY", default_value = "#")]
    pub events_routing_key: String,
}

/// What one poll found.
#[derive(Debug, Default)]
struct Tally {
    objects: usize,
    queued: usize,
    done: usize,
    in_flight: usize,
    not_video: usize,
}

pub struct Watcher<'a> {
    pub enqueuer: Enqueuer<'a>,
    pub source: ObjectRef,
    pub args: WatchArgs,
    pub topology: Topology,
    pub dead: Publisher,
    /// Key → listing stamp (`store::Listed::stamp`) of objects settled for
    /// good: done under this pipeline, or reported as not a video. Bounded;
    /// a forgotten one costs a request.
    seen: LruCache<String, String>,
}

enum End {
    Stopped,
    LeaseLost,
}

impl<'a> Watcher<'a> {
    pub fn new(
        enqueuer: Enqueuer<'a>,
        source: ObjectRef,
        args: WatchArgs,
        topology: Topology,
        dead: Publisher,
    ) -> Self {
        let seen = LruCache::new(args.remember);
        Self {
            enqueuer,
            source,
            args,
            topology,
            dead,
            seen,
        }
    }

    /// Names the lease and events queue after the source and pipeline, so
    /// watchers of other prefixes or pipelines run side by side. 48 bits of
    /// a hash: unique among a fleet's watchers, short enough for `ops`.
    fn instance(&self) -> String {
        let name = format!("{}\n{}", self.source, self.enqueuer.pipeline.fingerprint());
        let mut id = Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes())
            .simple()
            .to_string();
        id.truncate(12);
        id
    }

    pub async fn run(
        mut self,
        connection: &Connection,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let lease_name = self.topology.watch_lease(&self.instance());
        let mut standing_by = false;
        while !stop.is_cancelled() {
            // The lease and events die with the connection: the next
            // leadership needs a new one (`fleet::reconnecting`).
            anyhow::ensure!(
                connection.status().connected(),
                "the broker connection was lost"
            );
            let lease = match Lease::try_acquire(connection, &lease_name).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    if !standing_by {
                        tracing::info!(source = %self.source, lease = lease_name, "another watcher is active for this source and pipeline; standing by");
                        standing_by = true;
                    }
                    self.pause(&stop).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "cannot take the watch lease, retrying"
                    );
                    self.pause(&stop).await;
                    continue;
                }
            };
            standing_by = false;
            tracing::info!(source = %self.source, task = self.enqueuer.pipeline.task, interval = ?self.args.interval, "watching");
            let end = self.lead(connection, &lease, &stop).await;
            lease.release().await;
            match end {
                Ok(End::Stopped) => break,
                Ok(End::LeaseLost) => {
                    tracing::warn!(
                        lease = lease_name,
                        "lost the watch lease (broker connection dropped); taking it again"
                    );
                }
                Err(e) if !connection.status().connected() => return Err(e),
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "watching stopped, retrying");
                    self.pause(&stop).await;
                }
            }
        }
        Ok(())
    }

    async fn pause(&self, stop: &CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(self.args.interval) => {}
        }
    }

    /// Polls and handles events while the lease holds. The events channel
    /// closes with the leadership, so that events it had prefetched go back
    /// to the queue for the next leader.
    async fn lead(
        &mut self,
        connection: &Connection,
        lease: &Lease,
        stop: &CancellationToken,
    ) -> anyhow::Result<End> {
        let mut events = match &self.args.events_exchange {
            Some(exchange) => Some(self.subscribe(connection, exchange).await?),
            None => None,
        };
        let end = self.lead_with(&mut events, lease, stop).await;
        if let Some((channel, _)) = events {
            channel.close(200, "leadership ended".into()).await.ok();
        }
        end
    }

    async fn lead_with(
        &mut self,
        events: &mut Option<(Channel, lapin::Consumer)>,
        lease: &Lease,
        stop: &CancellationToken,
    ) -> anyhow::Result<End> {
        let mut ticker = tokio::time::interval(self.args.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_event = async {
                match events.as_mut() {
                    Some((_, consumer)) => consumer.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return Ok(End::Stopped),
                _ = ticker.tick() => {
                    if !lease.still_held().await {
                        return Ok(End::LeaseLost);
                    }
                    match self.poll(stop).await {
                        Ok(t) if t.queued > 0 => tracing::info!(objects = t.objects, queued = t.queued, done = t.done, in_flight = t.in_flight, not_video = t.not_video, "poll finished"),
                        Ok(t) => tracing::debug!(objects = t.objects, done = t.done, in_flight = t.in_flight, not_video = t.not_video, "poll finished, nothing new"),
                        // The store is down or refuses us: say so, try again next tick.
                        Err(e) => tracing::error!(failure = "poll_failed", source = %self.source, error = format!("{e:#}"), "poll failed"),
                    }
                }
                event = next_event => match event {
                    Some(Ok(delivery)) => {
                        if !lease.still_held().await {
                            fleet::settle::requeue(&delivery.acker).await;
                            return Ok(End::LeaseLost);
                        }
                        let queue = self.topology.events_queue(&self.instance());
                        self.on_event(delivery, &queue).await?;
                    }
                    Some(Err(e)) => {
                        return Err(anyhow::Error::from(e).context("consuming bucket events"));
                    }
                    None => return Ok(End::LeaseLost),
                },
            }
        }
    }

    async fn subscribe(
        &self,
        connection: &Connection,
        exchange: &str,
    ) -> anyhow::Result<(Channel, lapin::Consumer)> {
        let channel = connection.create_channel().await?;
        let queue = self.topology.events_queue(&self.instance());
        let kind = match self.args.events_exchange_type {
            EventsExchangeKind::Topic => ExchangeKind::Topic,
            EventsExchangeKind::Fanout => ExchangeKind::Fanout,
            EventsExchangeKind::Direct => ExchangeKind::Direct,
        };
        self.topology
            .declare_events(
                &channel,
                &queue,
                exchange,
                kind,
                &self.args.events_routing_key,
            )
            .await?;
        channel.basic_qos(16, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("watch pid {}", std::process::id()).as_str().into(),
                BasicConsumeOptions::default(),
                Default::default(),
            )
            .await?;
        tracing::info!(exchange, queue, "consuming S3 event notifications");
        Ok((channel, consumer))
    }

    async fn on_event(&mut self, delivery: Delivery, queue: &str) -> anyhow::Result<()> {
        let candidates = match events::created(&delivery.data) {
            Ok(c) => c,
            Err(reason) => {
                fleet::dead_letter(&self.dead, &delivery, queue, "not_s3_event", &reason).await?;
                return Ok(());
            }
        };
        let mut tally = Tally::default();
        for candidate in candidates {
            let ours = candidate.object.bucket == self.source.bucket
                && candidate.object.key.starts_with(&self.source.key);
            if !ours {
                continue;
            }
            let stamp = candidate.etag.clone().unwrap_or_default();
            if let Err(e) = self.visit(candidate, stamp, &mut tally, "event").await {
                // The store or broker is unreachable: the event comes back.
                tracing::error!(
                    failure = "event_requeued",
                    error = format!("{e:#}"),
                    "event not handled, requeued"
                );
                fleet::settle::requeue(&delivery.acker).await;
                return Ok(());
            }
        }
        fleet::settle::ack(&delivery.acker).await;
        Ok(())
    }

    async fn poll(&mut self, stop: &CancellationToken) -> anyhow::Result<Tally> {
        let mut tally = Tally::default();
        let mut pages = store::Pages::new(self.enqueuer.s3, &self.source.bucket, &self.source.key);
        while let Some(page) = pages.next().await? {
            for listed in page {
                if stop.is_cancelled() {
                    return Ok(tally);
                }
                let candidate = Candidate {
                    object: ObjectRef {
                        bucket: self.source.bucket.clone(),
                        key: listed.key,
                    },
                    etag: listed.etag,
                };
                self.visit(candidate, listed.stamp, &mut tally, "poll")
                    .await?;
            }
        }
        Ok(tally)
    }

    fn looks_like_video(&self, key: &str) -> bool {
        let Some((_, ext)) = key.rsplit_once('.') else {
            return false;
        };
        self.args
            .extensions
            .iter()
            .any(|e| e.trim_start_matches('.').eq_ignore_ascii_case(ext))
    }

    /// Settles one object; `via` (poll or event) goes into the log line.
    async fn visit(
        &mut self,
        c: Candidate,
        stamp: String,
        tally: &mut Tally,
        via: &'static str,
    ) -> anyhow::Result<()> {
        if self.enqueuer.pipeline.is_own_or_marker(&c.object) {
            return Ok(());
        }
        tally.objects += 1;
        if self.seen.get(&c.object.key) == Some(&stamp) {
            return Ok(());
        }
        if !self.looks_like_video(&c.object.key) {
            tracing::info!(object = %c.object, "not a video by its extension, skipped (see --extensions)");
            tally.not_video += 1;
            self.seen.put(c.object.key, stamp);
            return Ok(());
        }
        match self.enqueuer.consider(&c).await? {
            Outcome::Queued(id) => {
                tracing::info!(video = %c.object, %id, via, "queued");
                tally.queued += 1;
            }
            Outcome::Done => {
                tally.done += 1;
                self.seen.put(c.object.key, stamp);
            }
            Outcome::InFlight => tally.in_flight += 1,
            Outcome::Gone => {}
        }
        Ok(())
    }
}
