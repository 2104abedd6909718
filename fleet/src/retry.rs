//! Waiting out a store or broker outage while holding a delivery.
//!
//! Requeueing at once would burn a message's few deliveries (the queues'
//! delivery limit is 5) in a tight loop during a restart that takes
//! seconds, and dead-letter work that only needed a moment. So a consumer
//! that meets an outage retries in place, with exponential backoff, for a
//! budget of time, and only then requeues.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const FIRST_WAIT: Duration = Duration::from_millis(200);
const LONGEST_WAIT: Duration = Duration::from_secs(5);

/// The retry budget of one delivery.
pub struct Patience {
    deadline: Instant,
    wait: Duration,
}

impl Patience {
    pub fn new(budget: Duration) -> Self {
        Self {
            deadline: Instant::now() + budget,
            wait: FIRST_WAIT,
        }
    }

    /// Sleeps before the next attempt. False when the budget would be
    /// overrun or `stop` fires: requeue instead.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        if Instant::now() + self.wait > self.deadline {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.wait) => {
                self.wait = (self.wait * 2).min(LONGEST_WAIT);
                true
            }
            _ = stop.cancelled() => false,
        }
    }

    /// The wait before the next attempt, for logs.
    pub fn next_wait(&self) -> Duration {
        self.wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backs_off_until_the_budget_is_spent() {
        let stop = CancellationToken::new();
        let mut patience = Patience::new(Duration::from_secs(10));
        let mut waits = Vec::new();
        while patience.wait(&stop).await {
            waits.push(patience.next_wait());
        }
        // 0.2 + 0.4 + 0.8 + 1.6 + 3.2 = 6.2 s slept; the next 5 s would overrun.
        assert_eq!(waits.len(), 5, "{waits:?}");
    }

    #[tokio::test]
    async fn stop_ends_the_wait_at_once() {
        let stop = CancellationToken::new();
        stop.cancel();
        let mut patience = Patience::new(Duration::from_secs(60));
        assert!(!patience.wait(&stop).await);
    }
}
