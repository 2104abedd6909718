//! Deliveries in, validated jobs out. Anything that can never be processed
//! is dead-lettered here with its reason, so that it reaches no model.

use futures::StreamExt;
use lapin::{Consumer, message::Delivery};
use schema::{FrameJob, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use fleet::Publisher;

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
            Ok(Message::FrameJob(job)) => Ok(job),
            Ok(other) => Err((
                "wrong_kind",
                format!("expected a frame job, got a {}", other.kind()),
            )),
            Err(e) => Err((e.cause(), format!("{:#}", anyhow::Error::from(e)))),
        }
    }

    /// Runs until the consumer ends or `stop` fires, then returns so that
    /// the batches already taken can drain.
    pub async fn run(
        self,
        mut consumer: Consumer,
        jobs: mpsc::Sender<Job>,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                next = consumer.next() => match next {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consumer error, waiting for recovery");
                        self.dead.channel().wait_for_recovery(e).await?;
                        continue;
                    }
                    None => return Ok(()),
                },
            };
            match self.check(&delivery) {
                Ok(job) => {
                    if jobs.send(Job { delivery, job }).await.is_err() {
                        return Ok(());
                    }
                }
                Err((cause, reason)) => {
                    fleet::dead_letter(&self.dead, &delivery, &self.queue, cause, &reason).await?;
                }
            }
        }
    }
}
