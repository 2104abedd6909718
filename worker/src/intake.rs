//! Deliveries in, validated jobs out. Anything that can never be processed
//! is dead-lettered here with its reason, so that it reaches no model.

use futures::StreamExt;
use lapin::{
    Channel, Consumer,
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
};
use schema::{FrameJob, Message};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use fleet::Publisher;

use crate::pace::{self, Held};

/// A decoded job and the delivery it must be acked through.
pub struct Job {
    pub delivery: Delivery,
    pub job: FrameJob,
}

pub struct Intake {
    pub queue: String,
    pub task: String,
    pub size: (usize, usize),
    pub dead: Publisher,
    /// Prefix of the consumer tags (one per subscription).
    pub tag: String,
    /// `--prefetch`: the most jobs ever held.
    pub ceiling: u16,
    pub held: Held,
}

impl Intake {
    /// The job, or why it can never be processed: a fixed cause (a metrics
    /// label) and the full reason.
    fn check(&self, delivery: &Delivery) -> Result<FrameJob, (&'static str, String)> {
        match schema::decode(&delivery.data) {
            Ok(Message::FrameJob(job)) if job.task != self.task => Err((
                "wrong_task",
                format!(
                    "job for task {} arrived on the {} queue",
                    job.task, self.task
                ),
            )),
            Ok(Message::FrameJob(job))
                if (job.width as usize, job.height as usize) != self.size =>
            {
                Err((
                    "wrong_size",
                    format!(
                        "frames are {}x{}, task {} needs {}x{}",
                        job.width, job.height, self.task, self.size.0, self.size.1
                    ),
                ))
            }
            // Unpacked here, so that a payload that does not unpack is
            // dead-lettered like any other bad job, and the model sees raw
            // RGB whatever the producer sent.
            Ok(Message::FrameJob(mut job)) => match fleet::payload::unpack(&mut job) {
                Ok(()) => Ok(job),
                Err(e) => Err(("payload", e.to_string())),
            },
            Ok(other) => Err((
                "wrong_kind",
                format!("expected a frame job, got a {}", other.kind()),
            )),
            Err(e) => Err((e.cause(), format!("{:#}", anyhow::Error::from(e)))),
        }
    }

    /// Subscribes, then runs until the consumer ends or `stop` fires, and
    /// cancels the subscription so that the batches already taken can
    /// drain. `prefetch` is the number of jobs that fit in the ack timeout
    /// (`pace`); the consumer is re-subscribed with it when it changes
    /// enough.
    pub async fn run(
        self,
        channel: &Channel,
        jobs: mpsc::Sender<Job>,
        stop: CancellationToken,
        mut prefetch: watch::Receiver<u16>,
    ) -> anyhow::Result<()> {
        let mut current = *prefetch.borrow_and_update();
        let mut generation = 1;
        let mut consumer = self.subscribe(channel, current, generation).await?;
        tracing::info!(queue = self.queue, prefetch = current, "consuming");
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => break,
                Ok(()) = prefetch.changed() => {
                    let target = *prefetch.borrow_and_update();
                    if pace::worth_changing(current, target, self.ceiling) {
                        self.drain(channel, consumer, &jobs).await?;
                        // The new window opens empty: with the old jobs
                        // still held, both together could exceed the fit.
                        self.held.none().await;
                        generation += 1;
                        consumer = self.subscribe(channel, target, generation).await?;
                        tracing::info!(prefetch = target, "prefetch fitted to the ack timeout");
                        current = target;
                    }
                    continue;
                }
                next = consumer.next() => match next {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => {
                        return Err(anyhow::Error::from(e).context("consuming frame jobs"));
                    }
                    None => return Ok(()),
                },
            };
            if !self.take(delivery, &jobs).await? {
                break;
            }
        }
        channel
            .basic_cancel(
                consumer.tag().as_str().into(),
                BasicCancelOptions::default(),
            )
            .await
            .ok();
        Ok(())
    }

    /// Passes a delivery on as a job, or dead-letters it. False when the
    /// batcher is gone.
    async fn take(&self, delivery: Delivery, jobs: &mpsc::Sender<Job>) -> anyhow::Result<bool> {
        match self.check(&delivery) {
            Ok(job) => {
                self.held.take();
                Ok(jobs.send(Job { delivery, job }).await.is_ok())
            }
            Err((cause, reason)) => {
                fleet::dead_letter(&self.dead, &delivery, &self.queue, cause, &reason).await?;
                Ok(true)
            }
        }
    }

    /// A consumer's prefetch is fixed when it subscribes (RabbitMQ applies
    /// `basic.qos` to consumers created after it), so a new prefetch is a
    /// new subscription. Each gets a tag of its own: RabbitMQ 3.10 crashes
    /// the channel when a quorum queue delivers to a tag that was
    /// cancelled and reused (`rabbit_channel:handle_deliver0`
    /// function_clause, found by the ack-timeout test).
    async fn subscribe(
        &self,
        channel: &Channel,
        prefetch: u16,
        generation: u32,
    ) -> anyhow::Result<Consumer> {
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("{} #{generation}", self.tag);
        Ok(channel
            .basic_consume(
                self.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                Default::default(),
            )
            .await?)
    }

    /// Cancels a subscription and takes what it was already sent. Held
    /// deliveries stay ours throughout.
    async fn drain(
        &self,
        channel: &Channel,
        mut old: Consumer,
        jobs: &mpsc::Sender<Job>,
    ) -> anyhow::Result<()> {
        channel
            .basic_cancel(old.tag().as_str().into(), BasicCancelOptions::default())
            .await?;
        while let Some(Ok(delivery)) = old.next().await {
            self.take(delivery, jobs).await?;
        }
        Ok(())
    }
}
