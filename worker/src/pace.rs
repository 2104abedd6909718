//! Keeps every delivery the worker holds acked within the broker's
//! consumer timeout.
//!
//! RabbitMQ closes a channel whose delivery stays unacked past
//! `consumer_timeout` (30 min by default, often lowered), and every
//! delivery on it goes back to the queue: a slow model would loop on the
//! same jobs until they are dead-lettered. A held job waits for the jobs
//! ahead of it, so the time to its ack is about prefetch × frames per job
//! × seconds per frame. The worker measures the last two and holds only
//! as many jobs as fit in half the timeout: one until the first batch is
//! measured, then up to `--prefetch`. Work per delivery is the producer's
//! job size (`--job-frames`); a single job that cannot fit is reported.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

/// Weight of the newest batch in the smoothed seconds per frame. A slower
/// batch is taken at once: the bound must hold for the slowest.
const SMOOTHING: f64 = 0.3;

pub struct Pace {
    /// Half the broker's consumer timeout, in seconds.
    budget_s: f64,
    ceiling: u16,
    seconds_per_frame: Option<f64>,
    largest_job: usize,
    warned_job: usize,
}

impl Pace {
    pub fn new(ack_timeout: Duration, ceiling: u16) -> Self {
        Self {
            budget_s: ack_timeout.as_secs_f64() / 2.0,
            ceiling,
            seconds_per_frame: None,
            largest_job: 1,
            warned_job: 0,
        }
    }

    /// Before anything is measured: one job.
    pub const INITIAL: u16 = 1;

    /// Takes one finished batch into account; returns the prefetch that fits.
    pub fn observe(&mut self, frames: usize, largest_job: usize, took: Duration) -> u16 {
        if frames > 0 {
            let now = took.as_secs_f64() / frames as f64;
            self.seconds_per_frame = Some(match self.seconds_per_frame {
                Some(before) if now <= before => before + SMOOTHING * (now - before),
                _ => now,
            });
        }
        self.largest_job = self.largest_job.max(largest_job);
        let job_s = self.largest_job as f64 * self.seconds_per_frame.unwrap_or(0.0);
        if job_s > self.budget_s && self.largest_job > self.warned_job {
            self.warned_job = self.largest_job;
            tracing::warn!(
                job_frames = self.largest_job,
                job_s = format!("{job_s:.1}"),
                budget_s = self.budget_s,
                "one job takes more than half the ack timeout: lower the producer's --job-frames, or raise the broker's consumer_timeout and --ack-timeout"
            );
        }
        self.prefetch()
    }

    fn prefetch(&self) -> u16 {
        let Some(per_frame) = self.seconds_per_frame else {
            return Self::INITIAL;
        };
        let jobs = self.budget_s / (per_frame * self.largest_job as f64).max(1e-9);
        jobs.floor().clamp(1.0, f64::from(self.ceiling)) as u16
    }
}

/// Whether to re-subscribe with `target` when holding `current`: always to
/// shrink (safety), to grow only by half again or to the ceiling, so that
/// noise in the timings does not churn the consumer.
pub fn worth_changing(current: u16, target: u16, ceiling: u16) -> bool {
    target < current || (target > current && (target >= current + current / 2 || target == ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_fits_in_half_the_timeout() {
        let mut pace = Pace::new(Duration::from_secs(60), 64);
        assert_eq!(pace.prefetch(), 1, "one job until measured");
        // 8-frame jobs at 0.5 s a frame: 4 s a job, 30 s of budget.
        assert_eq!(pace.observe(8, 8, Duration::from_secs(4)), 7);
        // Fast: capped by --prefetch.
        let mut fast = Pace::new(Duration::from_secs(1800), 8);
        assert_eq!(fast.observe(8, 8, Duration::from_millis(200)), 8);
    }

    #[test]
    fn a_slowdown_counts_at_once_a_speedup_gradually() {
        let mut pace = Pace::new(Duration::from_secs(60), 64);
        pace.observe(8, 8, Duration::from_secs(1));
        assert_eq!(
            pace.observe(8, 8, Duration::from_secs(10)),
            3,
            "10 s a job: 3 fit in 30 s"
        );
        // One fast batch does not undo it.
        assert!(pace.observe(8, 8, Duration::from_secs(1)) < 5);
    }

    #[test]
    fn a_job_too_large_for_the_timeout_still_gets_one() {
        let mut pace = Pace::new(Duration::from_secs(10), 8);
        assert_eq!(pace.observe(32, 32, Duration::from_secs(64)), 1);
    }

    #[test]
    fn resubscribes_to_shrink_or_to_grow_by_half() {
        assert!(worth_changing(8, 7, 16));
        assert!(!worth_changing(8, 9, 16));
        assert!(worth_changing(8, 12, 16));
        assert!(worth_changing(1, 2, 16));
        assert!(worth_changing(15, 16, 16));
        assert!(!worth_changing(8, 8, 16));
    }

    #[tokio::test]
    async fn waits_until_every_held_job_is_settled() {
        let held = Held::new();
        held.take();
        held.take();
        let waiting = tokio::spawn({
            let held = held.clone();
            async move { held.none().await }
        });
        held.settle();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one job still held");
        held.settle();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("released once none is held")
            .expect("task");
    }
}

/// Jobs taken from the broker and not yet acked or requeued: what counts
/// against the ack timeout. A new subscription waits until none are held,
/// or old and new windows together could exceed what fits.
#[derive(Clone)]
pub struct Held(Arc<watch::Sender<usize>>);

impl Held {
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }

    pub fn take(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    pub fn settle(&self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Returns once every held job is settled.
    pub async fn none(&self) {
        // The sender lives as long as `self`, so the wait cannot fail.
        self.0.subscribe().wait_for(|n| *n == 0).await.ok();
    }
}
