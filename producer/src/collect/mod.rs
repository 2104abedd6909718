//! `producer collect`: results in, per-video outputs in the bucket out.
//!
//! Each result is stored as a part object before it is acked, so memory
//! holds one message at a time and a crash loses nothing. When a video's
//! `VideoDone` and all its parts are stored, the outputs are assembled by
//! streaming the parts in order, then `status/<key>.json` is written and
//! the parts are deleted. Every write is keyed by video id and seq, so a
//! redelivered message rewrites the same bytes.

mod assemble;
mod captions;

use std::time::Duration;

use futures::StreamExt;
use lapin::{
    Channel,
    message::Delivery,
    options::{BasicConsumeOptions, BasicQosOptions},
};
use schema::{Message, ObjectRef, VideoFailed};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use fleet::{
    Publisher, Topology,
    layout::{Layout, done_key, part_key, parts_prefix},
    retry::Patience,
    status::{Claim, State, Status, now_unix_ms},
    store,
};

pub struct Collector {
    pub s3: aws_sdk_s3::Client,
    pub topology: Topology,
    pub dead: Publisher,
    pub prefetch: u16,
    pub store_retry: Duration,
}

impl Collector {
    pub async fn run(self, channel: Channel, stop: CancellationToken) -> anyhow::Result<()> {
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let queue = self.topology.results_queue();
        let tag = format!("collector pid {}", std::process::id());
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                Default::default(),
            )
            .await?;
        tracing::info!(queue, "collecting results");
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => break,
                next = consumer.next() => match next {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => {
                        return Err(anyhow::Error::from(e).context("consuming the results"));
                    }
                    None => break,
                },
            };
            self.handle(delivery, &queue, &stop).await?;
        }
        channel
            .basic_cancel(tag.as_str().into(), Default::default())
            .await
            .ok();
        Ok(())
    }

    async fn handle(
        &self,
        delivery: Delivery,
        queue: &str,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let rejected = match schema::decode(&delivery.data) {
            Ok(m @ (Message::FrameResult(_) | Message::VideoDone(_) | Message::VideoFailed(_))) => {
                Ok(m)
            }
            Ok(other) => Err((
                "wrong_kind",
                format!("a {} does not belong on the results queue", other.kind()),
            )),
            Err(e) => Err((e.cause(), format!("{:#}", anyhow::Error::from(e)))),
        };
        let message = match rejected {
            Ok(m) => m,
            Err((cause, reason)) => {
                fleet::dead_letter(&self.dead, &delivery, queue, cause, &reason).await?;
                return Ok(());
            }
        };
        // A store that is down or restarting is waited out here instead of
        // burning the message's deliveries; SIGTERM cuts the wait short.
        let mut patience = Patience::new(self.store_retry);
        loop {
            let e = match self.store(&message, &delivery.data).await {
                Ok(()) => {
                    fleet::settle::ack(&delivery.acker).await;
                    return Ok(());
                }
                Err(e) => e,
            };
            let retry_ms = patience.next_wait().as_millis() as u64;
            if patience.wait(stop).await {
                tracing::warn!(
                    kind = message.kind(),
                    error = format!("{e:#}"),
                    retry_ms,
                    "store failed, retried"
                );
                continue;
            }
            tracing::error!(
                failure = "store_error",
                kind = message.kind(),
                error = format!("{e:#}"),
                "result not stored, requeued"
            );
            fleet::settle::requeue(&delivery.acker).await;
            return Ok(());
        }
    }

    async fn store(&self, message: &Message, raw: &[u8]) -> anyhow::Result<()> {
        match message {
            Message::FrameResult(r) => {
                self.store_part(
                    r.video_id,
                    &r.output,
                    &r.source,
                    &part_key(&r.output, r.video_id, r.seq),
                    raw,
                )
                .await
            }
            Message::VideoDone(d) => {
                self.store_part(
                    d.video_id,
                    &d.output,
                    &d.source,
                    &done_key(&d.output, d.video_id),
                    raw,
                )
                .await
            }
            Message::VideoFailed(f) => self.fail(f).await,
            // `handle` dead-letters every other kind before it gets here.
            other => anyhow::bail!("a {} does not belong on the results queue", other.kind()),
        }
    }

    /// Whether this submission of the video already has its final status,
    /// in which case a late or redelivered message changes nothing.
    async fn finished(
        &self,
        output: &ObjectRef,
        source: &ObjectRef,
        video_id: Uuid,
    ) -> anyhow::Result<bool> {
        let key = Layout {
            output,
            source_key: &source.key,
        }
        .status();
        let Some(bytes) = store::get(&self.s3, &output.bucket, &key).await? else {
            return Ok(false);
        };
        Ok(serde_json::from_slice::<Status>(&bytes).is_ok_and(|s| s.video_id == video_id))
    }

    async fn store_part(
        &self,
        video_id: Uuid,
        output: &ObjectRef,
        source: &ObjectRef,
        key: &str,
        raw: &[u8],
    ) -> anyhow::Result<()> {
        if self.finished(output, source, video_id).await? {
            tracing::debug!(video = %source, key, "video already final, message dropped");
            // A collector stopped between writing the status and deleting
            // the parts left them behind; this redelivery clears them.
            return self.delete_parts(output, video_id).await;
        }
        store::put(
            &self.s3,
            &output.bucket,
            key,
            raw.to_vec(),
            "application/x-framefleet",
        )
        .await?;
        assemble::try_finalize(&self.s3, output, video_id).await?;
        Ok(())
    }

    async fn fail(&self, failed: &VideoFailed) -> anyhow::Result<()> {
        let output = &failed.output;
        let layout = Layout {
            output,
            source_key: &failed.source.key,
        };
        // A run that failed because its object was replaced must not bury
        // the result of a run over the newer bytes.
        if let Some(existing) = store::get(&self.s3, &output.bucket, &layout.status()).await?
            && let Ok(existing) = serde_json::from_slice::<Status>(&existing)
            && existing.state != State::Failed
            && existing.etag != failed.provenance.etag
        {
            tracing::warn!(video = %failed.source, reason = %failed.reason, "failure of an older version kept out of the status");
            return self.delete_parts(output, failed.video_id).await;
        }
        let status = Status {
            state: State::Failed,
            video_id: failed.video_id,
            source: failed.source.to_string(),
            task: failed.task.clone(),
            model: None,
            frames: 0,
            decoded: 0,
            jobs: 0,
            error: Some(failed.reason.clone()),
            coverage: None,
            timings: Default::default(),
            outputs: Vec::new(),
            etag: failed.provenance.etag.clone(),
            fingerprint: Some(failed.provenance.fingerprint.clone()),
            finished_at_unix_ms: now_unix_ms(),
        };
        store::put(
            &self.s3,
            &output.bucket,
            &layout.status(),
            serde_json::to_vec_pretty(&status)?,
            "application/json",
        )
        .await?;
        release_claim(&self.s3, &layout, failed.video_id).await?;
        self.delete_parts(output, failed.video_id).await?;
        metrics::counter!(fleet::metrics::VIDEOS_FINISHED, "state" => State::Failed.as_str())
            .increment(1);
        tracing::warn!(video = %failed.source, reason = %failed.reason, "video marked failed");
        Ok(())
    }

    async fn delete_parts(&self, output: &ObjectRef, video_id: Uuid) -> anyhow::Result<()> {
        let parts = store::list(&self.s3, &output.bucket, &parts_prefix(output, video_id)).await?;
        store::delete_all(&self.s3, &output.bucket, &parts).await
    }
}

/// Deletes discovery's claim once its run has a status, so that the claim
/// never outlives the run. A claim of another run (newer bytes) stays.
async fn release_claim(
    client: &aws_sdk_s3::Client,
    layout: &Layout<'_>,
    video_id: Uuid,
) -> anyhow::Result<()> {
    let bucket = &layout.output.bucket;
    let key = layout.claim();
    if let Some(claim) = store::get(client, bucket, &key).await?
        && serde_json::from_slice::<Claim>(&claim).is_ok_and(|c| c.video_id == video_id)
    {
        store::delete(client, bucket, &key).await?;
    }
    Ok(())
}
