//! Publishes one result per job and acks the job only once the result is
//! confirmed; a batch's results are confirmed together. A model failure requeues the batch's jobs; RabbitMQ's delivery
//! limit dead-letters a job that keeps failing.

use std::time::{Duration, Instant};

use schema::{FrameResult, HeadOutputs, HeadValues, Message};
use tokio::sync::{mpsc, watch};

use fleet::{Publisher, Topology};

use crate::{
    engine::Finished,
    models::Outputs,
    pace::{Held, Pace},
};

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub struct Reply {
    pub results: Publisher,
    pub model: String,
    pub pace: Pace,
    /// Tells the intake how many jobs fit in the ack timeout.
    pub prefetch: watch::Sender<u16>,
    pub held: Held,
}

impl Reply {
    pub async fn run(mut self, mut finished: mpsc::Receiver<Finished>) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut last_report: Option<Instant> = None;
        let mut frames_done = 0u64;
        while let Some(batch) = finished.recv().await {
            match batch.outcome {
                Ok(outputs) => {
                    let largest_job = batch.jobs.iter().map(|j| j.job.frames.len()).max();
                    let publishing = Instant::now();
                    let frames = self.publish(batch.jobs, &outputs, batch.compute_ms).await?;
                    let took =
                        Duration::from_millis(batch.compute_ms.into()) + publishing.elapsed();
                    let fits = self.pace.observe(frames, largest_job.unwrap_or(0), took);
                    self.prefetch
                        .send_if_modified(|p| std::mem::replace(p, fits) != fits);
                    metrics::counter!(fleet::metrics::FRAMES_INFERRED).increment(frames as u64);
                    metrics::histogram!(fleet::metrics::BATCH_FRAMES).record(frames as f64);
                    metrics::histogram!(fleet::metrics::MODEL_SECONDS)
                        .record(f64::from(batch.compute_ms) / 1000.0);
                    frames_done += frames as u64;
                    if last_report.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
                        let secs = started.elapsed().as_secs_f64().max(1e-3);
                        tracing::info!(
                            frames = frames_done,
                            fps = format!("{:.1}", frames_done as f64 / secs),
                            "progress"
                        );
                        last_report = Some(Instant::now());
                    }
                }
                Err(e) => {
                    tracing::error!(failure = "model_error", error = %e, jobs = batch.jobs.len(), "model failed, requeueing jobs");
                    for j in batch.jobs {
                        fleet::settle::requeue(&j.delivery.acker).await;
                        self.held.settle();
                    }
                }
            }
        }
        Ok(())
    }

    /// Publishes every job's result of a batch at once and acks each job
    /// as its own result is confirmed: one round trip per batch rather
    /// than one per job, so a fast model is not throttled by the broker's
    /// latency. A broker error drops the rest unacked; the broker
    /// redelivers them and the collector absorbs any duplicate result.
    async fn publish(
        &self,
        jobs: Vec<crate::intake::Job>,
        outputs: &Outputs,
        compute_ms: u32,
    ) -> anyhow::Result<usize> {
        let dim = outputs.dim;
        let mut offset = 0;
        let mut results = Vec::with_capacity(jobs.len());
        for j in jobs {
            let job = j.job;
            let n = job.frames.len();
            // Per-image outputs are empty or cover the batch (the engine checks).
            fn slice<T: Clone>(all: &[T], range: std::ops::Range<usize>) -> Vec<T> {
                all.get(range).map(<[T]>::to_vec).unwrap_or_default()
            }
            let result = FrameResult {
                video_id: job.video_id,
                task: job.task,
                source: job.source,
                output: job.output,
                seq: job.seq,
                frames: job.frames,
                model: self.model.clone(),
                dim: dim as u32,
                embeddings: slice(&outputs.embeddings, offset * dim..(offset + n) * dim),
                labels: slice(&outputs.labels, offset..offset + n),
                captions: slice(&outputs.captions, offset..offset + n),
                compute_ms,
                heads: outputs
                    .heads
                    .iter()
                    .map(|h| HeadOutputs {
                        name: h.name.clone(),
                        values: match &h.values {
                            HeadValues::Classes(v) => {
                                HeadValues::Classes(slice(v, offset..offset + n))
                            }
                            HeadValues::Numbers(v) => {
                                HeadValues::Numbers(slice(v, offset..offset + n))
                            }
                        },
                    })
                    .collect(),
            };
            offset += n;
            results.push((schema::encode(&Message::FrameResult(result))?, j.delivery));
        }
        // The publishes share one channel, so their confirms come back in
        // one pipeline.
        futures::future::try_join_all(results.into_iter().map(|(payload, delivery)| async move {
            self.results
                .publish(Topology::RESULTS_KEY, &payload, Default::default())
                .await?;
            // The result is out; a job whose ack is lost comes back and its
            // duplicate result is absorbed by the idempotent collector.
            if fleet::settle::ack(&delivery.acker).await {
                metrics::counter!(fleet::metrics::JOBS_ACKED).increment(1);
            }
            self.held.settle();
            Ok::<_, fleet::PublishError>(())
        }))
        .await?;
        Ok(offset)
    }
}
