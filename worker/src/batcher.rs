//! Packs whatever jobs are ready into one model batch: up to `max_frames`
//! frames, or whatever arrived within `max_wait` of the batch's first job.

use std::time::Duration;

use tokio::{sync::mpsc, time::Instant};

pub struct Limits {
    pub max_frames: usize,
    pub max_wait: Duration,
}

/// Anything with a frame count can be batched.
pub trait Weighted {
    fn frames(&self) -> usize;
}

/// Runs until `input` closes, flushing the last partial batch. `output` has
/// capacity 1: exactly one batch waits while the model runs the previous.
pub async fn run<T: Weighted>(
    mut input: mpsc::Receiver<T>,
    output: mpsc::Sender<Vec<T>>,
    limits: Limits,
) {
    let mut carry: Option<T> = None;
    loop {
        let first = match carry.take() {
            Some(item) => item,
            None => match input.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let deadline = Instant::now() + limits.max_wait;
        let mut frames = first.frames();
        let mut batch = vec![first];
        while frames < limits.max_frames {
            match tokio::time::timeout_at(deadline, input.recv()).await {
                Ok(Some(item)) if frames + item.frames() > limits.max_frames => {
                    carry = Some(item);
                    break;
                }
                Ok(Some(item)) => {
                    frames += item.frames();
                    batch.push(item);
                }
                Ok(None) | Err(_) => break,
            }
        }
        if output.send(batch).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item(usize);
    impl Weighted for Item {
        fn frames(&self) -> usize {
            self.0
        }
    }

    fn limits() -> Limits {
        Limits {
            max_frames: 8,
            max_wait: Duration::from_millis(50),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fills_up_to_max_frames_without_waiting() {
        let (tx, rx) = mpsc::channel(16);
        let (btx, mut brx) = mpsc::channel(1);
        for n in [3, 5, 4] {
            tx.send(Item(n)).await.expect("open");
        }
        tokio::spawn(run(rx, btx, limits()));
        let start = Instant::now();
        let batch = brx.recv().await.expect("batch");
        assert_eq!(batch.iter().map(|i| i.0).collect::<Vec<_>>(), [3, 5]);
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a full batch must not wait"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_leaves_after_max_wait() {
        let (tx, rx) = mpsc::channel(16);
        let (btx, mut brx) = mpsc::channel(1);
        tokio::spawn(run(rx, btx, limits()));
        tx.send(Item(2)).await.expect("open");
        let start = Instant::now();
        let batch = brx.recv().await.expect("batch");
        assert_eq!(batch.len(), 1);
        assert_eq!(start.elapsed(), Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_that_would_overflow_starts_the_next_batch() {
        let (tx, rx) = mpsc::channel(16);
        let (btx, mut brx) = mpsc::channel(4);
        for n in [6, 6, 20] {
            tx.send(Item(n)).await.expect("open");
        }
        drop(tx);
        run(rx, btx, limits()).await;
        let sizes: Vec<Vec<usize>> = std::iter::from_fn(|| brx.try_recv().ok())
            .map(|b| b.iter().map(|i| i.0).collect())
            .collect();
        assert_eq!(sizes, [vec![6], vec![6], vec![20]]);
    }
}
