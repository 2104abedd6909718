//! `producer run`: video tasks in, frame jobs + `VideoDone`/`VideoFailed` out.

use std::{collections::HashSet, time::Duration};

use anyhow::Context;
use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicConsumeOptions, BasicQosOptions},
};
use schema::{Frame, FrameJob, Message, VideoDone, VideoFailed, VideoTask};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;

use fleet::{Publisher, Topology, retry::Patience};

use fleet::{layout::Layout, payload::Packed, status::Status, store};

use crate::decode;

#[derive(Clone, Debug, clap::Args)]
pub struct ProduceArgs {
    /// Most frames in one job.
    #[arg(long, env = "FF_JOB_FRAMES", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub job_frames: u32,

    /// Most pixel bytes in one job (RabbitMQ 4 refuses messages over 16 MiB).
    #[arg(long, env = "FF_JOB_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub job_bytes: usize,

    /// Frame jobs published but not yet confirmed, per video.
    #[arg(long, env = "FF_MAX_IN_FLIGHT", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Decoder threads per video (frame and slice threading, as the codec
    /// allows); 0 lets libavcodec pick from the core count, as the ffmpeg
    /// CLI does. 1 leaves the other cores to a worker on the same machine.
    #[arg(long, env = "FF_DECODE_THREADS", default_value_t = 0)]
    pub decode_threads: u32,
}

pub struct Producer {
    pub s3: aws_sdk_s3::Client,
    /// Where the store is: the retry budget, and the CA libav must trust.
    pub store: store::S3Args,
    pub topology: Topology,
    pub publisher: Publisher,
    pub dead: Publisher,
    pub args: ProduceArgs,
    declared: HashSet<String>,
}

/// What became of one video task.
enum Outcome {
    Done(VideoDone),
    /// With a short, fixed cause (a metrics label).
    Failed(&'static str, VideoFailed),
    /// The run already has its status (a duplicate delivery of the task).
    AlreadyFinal,
}

impl Producer {
    pub fn new(
        s3: aws_sdk_s3::Client,
        store: store::S3Args,
        topology: Topology,
        publisher: Publisher,
        dead: Publisher,
        args: ProduceArgs,
    ) -> Self {
        Self {
            s3,
            store,
            topology,
            publisher,
            dead,
            args,
            declared: HashSet::new(),
        }
    }

    pub async fn run(
        mut self,
        channel: lapin::Channel,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        // One video at a time per producer: more producers, more parallel decodes.
        channel.basic_qos(1, BasicQosOptions::default()).await?;
        let queue = self.topology.videos_queue();
        let tag = format!("producer pid {}", std::process::id());
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                Default::default(),
            )
            .await?;
        tracing::info!(queue, "waiting for videos");
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => break,
                next = consumer.next() => match next {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => {
                        return Err(anyhow::Error::from(e).context("consuming the video tasks"));
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
        &mut self,
        delivery: Delivery,
        queue: &str,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (cause, reason) = match schema::decode(&delivery.data) {
            Ok(Message::VideoTask(t)) => return self.handle_task(delivery, t, stop).await,
            Ok(other) => (
                "wrong_kind",
                format!("expected a video task, got a {}", other.kind()),
            ),
            Err(e) => (e.cause(), format!("{:#}", anyhow::Error::from(e))),
        };
        fleet::dead_letter(&self.dead, &delivery, queue, cause, &reason).await?;
        Ok(())
    }

    async fn handle_task(
        &mut self,
        delivery: Delivery,
        task: VideoTask,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        // Infrastructure trouble (broker, store) is not the video's: try
        // again in place while the store restarts, then requeue; the
        // queue's delivery limit bounds the requeues. A retry decodes from
        // the start and rewrites the same jobs under the same seqs.
        let mut patience = Patience::new(self.store.store_retry);
        let outcome = loop {
            match self.process(&task, stop).await {
                Ok(outcome) => break outcome,
                // Nothing to retry on a dead connection: the run unwinds,
                // and the broker hands the task out again.
                Err(e) if !self.publisher.channel().status().connected() => {
                    return Err(e.context(format!(
                        "the broker connection was lost while producing {}",
                        task.source
                    )));
                }
                Err(e) if !stop.is_cancelled() && patience.wait(stop).await => {
                    tracing::warn!(video = %task.source, error = format!("{e:#}"), "store or broker trouble, video task retried");
                }
                Err(e) => {
                    tracing::error!(failure = "video_requeued", video = %task.source, error = format!("{e:#}"), "video task requeued");
                    fleet::settle::requeue(&delivery.acker).await;
                    return Ok(());
                }
            }
        };
        let message = match outcome {
            Outcome::Done(done) => {
                tracing::info!(video = %task.source, frames = done.frames, jobs = done.jobs, decode_ms = done.decode_ms, "video published");
                Message::VideoDone(done)
            }
            Outcome::Failed(cause, failed) => {
                tracing::warn!(failure = "video_failed", cause, video = %task.source, reason = %failed.reason, "video failed");
                Message::VideoFailed(failed)
            }
            Outcome::AlreadyFinal => {
                tracing::info!(video = %task.source, id = %task.video_id, "run already finished, duplicate task dropped");
                fleet::settle::ack(&delivery.acker).await;
                return Ok(());
            }
        };
        self.publisher
            .publish(
                Topology::RESULTS_KEY,
                &schema::encode(&message)?,
                Default::default(),
            )
            .await?;
        fleet::settle::ack(&delivery.acker).await;
        Ok(())
    }

    fn failed(task: &VideoTask, cause: &'static str, reason: String) -> Outcome {
        Outcome::Failed(
            cause,
            VideoFailed {
                video_id: task.video_id,
                task: task.task.clone(),
                source: task.source.clone(),
                output: task.output.clone(),
                reason: VideoFailed::truncate_reason(&reason),
                provenance: task.provenance.clone(),
            },
        )
    }

    /// Decodes and publishes every job of one video. `Err` is for failures
    /// that are not the video's fault and deserve a retry.
    async fn process(
        &mut self,
        task: &VideoTask,
        stop: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let Some(spec) = schema::known_task(&task.task) else {
            return Ok(Self::failed(
                task,
                "unknown_task",
                format!("unknown task {}", task.task),
            ));
        };
        if let Some(outcome) = self.precheck(task).await? {
            return Ok(outcome);
        }
        if !self.declared.contains(&task.task) {
            self.topology
                .declare_frames(self.publisher.channel(), &task.task)
                .await?;
            self.declared.insert(task.task.clone());
        }
        // A presigned URL lets libavformat issue its own ranged GETs: no temp
        // file, no whole-video buffer. It must outlive the longest decode.
        let url =
            store::presigned_get(&self.s3, &task.source, Duration::from_secs(12 * 3600)).await?;
        let settings = decode::Settings {
            width: spec.width,
            height: spec.height,
            fit: spec.fit,
            sampling: task.sampling,
            job_frames: self.args.job_frames as usize,
            job_bytes: self.args.job_bytes,
            threads: self.args.decode_threads as usize,
            ca_file: self.store.s3_ca_file.clone(),
            skip_unsampled: true,
        };
        let in_flight = self.args.max_in_flight as usize;
        let (tx, mut rx) = mpsc::channel::<(Vec<Frame>, Packed)>(in_flight);
        let packing = task.payload;
        let source = task.source.clone();
        let (width, height) = (spec.width, spec.height);
        let decoding = tokio::task::spawn_blocking(move || {
            decode::decode(&url, &settings, |batch| {
                // Packed here, on the decode thread, off the async workers.
                match fleet::payload::pack(packing, batch.pixels, width, height) {
                    Ok(packed) => tx.blocking_send((batch.frames, packed)).is_ok(),
                    Err(e) => {
                        tracing::error!(video = %source, error = %e, "cannot pack frames");
                        false
                    }
                }
            })
        });

        let mut pending = JoinSet::new();
        let mut seq = 0u32;
        let mut sampled = 0u64;
        while let Some((batch_frames, packed)) = rx.recv().await {
            if stop.is_cancelled() {
                break;
            }
            while pending.len() >= in_flight {
                pending.join_next().await.context("publish set empty")???;
            }
            let frame_count = batch_frames.len();
            let pixel_bytes = packed.bytes.len() as u64;
            sampled += frame_count as u64;
            let job = FrameJob {
                video_id: task.video_id,
                task: task.task.clone(),
                source: task.source.clone(),
                output: task.output.clone(),
                seq,
                width: spec.width,
                height: spec.height,
                frames: batch_frames,
                payload: packing,
                pixels: packed.bytes,
                frame_bytes: packed.frame_bytes,
            };
            seq += 1;
            let payload = schema::encode(&Message::FrameJob(job))?;
            let publisher = self.publisher.clone();
            let key = task.task.clone();
            let frames = frame_count as u64;
            pending.spawn(async move {
                publisher
                    .publish(Topology::frames_key(&key), &payload, Default::default())
                    .await?;
                metrics::counter!(fleet::metrics::FRAMES_PUBLISHED).increment(frames);
                metrics::counter!(fleet::metrics::JOBS_PUBLISHED).increment(1);
                metrics::counter!(fleet::metrics::JOB_BYTES_PUBLISHED).increment(pixel_bytes);
                Ok::<_, fleet::PublishError>(())
            });
        }
        drop(rx);
        while let Some(done) = pending.join_next().await {
            done??;
        }
        let summary = match decoding.await? {
            Ok(summary) => summary,
            Err(e) if e.is_transient() => anyhow::bail!("reading {}: {e}", task.source),
            Err(e) => {
                return Ok(Self::failed(
                    task,
                    e.cause(),
                    format!("{}: {e}", task.source),
                ));
            }
        };
        anyhow::ensure!(
            sampled == summary.sampled,
            "published {sampled} frames of {} sampled",
            summary.sampled
        );
        metrics::counter!(fleet::metrics::DECODE_ERRORS).increment(summary.coverage.decode_errors);
        if let Some(reason) = &summary.coverage.incomplete {
            tracing::warn!(video = %task.source, reason, "video decoded incompletely");
        }
        Ok(Outcome::Done(VideoDone {
            video_id: task.video_id,
            task: task.task.clone(),
            source: task.source.clone(),
            output: task.output.clone(),
            jobs: seq,
            frames: summary.sampled,
            decoded: summary.decoded,
            decode_ms: summary.decode_ms,
            coverage: summary.coverage,
            provenance: task.provenance.clone(),
        }))
    }

    /// Settles without decoding what needs no decoding: a duplicate of a
    /// run that already has its status, and an object deleted or replaced
    /// since it was queued (the replacement is a run of its own).
    async fn precheck(&self, task: &VideoTask) -> anyhow::Result<Option<Outcome>> {
        let layout = Layout {
            output: &task.output,
            source_key: &task.source.key,
        };
        if let Some(bytes) = store::get(&self.s3, &task.output.bucket, &layout.status()).await?
            && serde_json::from_slice::<Status>(&bytes).is_ok_and(|s| s.video_id == task.video_id)
        {
            return Ok(Some(Outcome::AlreadyFinal));
        }
        let (cause, reason) = match (
            store::head_etag(&self.s3, &task.source).await?,
            &task.provenance.etag,
        ) {
            (None, _) => (
                "gone",
                format!("{}: the object no longer exists", task.source),
            ),
            (Some(now), Some(queued)) if !now.is_empty() && &now != queued => (
                "replaced",
                format!(
                    "{}: the object was replaced after it was queued (ETag {queued}, now {now})",
                    task.source
                ),
            ),
            _ => return Ok(None),
        };
        Ok(Some(Self::failed(task, cause, reason)))
    }
}
