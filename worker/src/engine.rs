//! The one thread that owns the model. Batches come in, outputs go out; no
//! lock, and nothing heavy ever runs on the async runtime.

use std::time::Instant;

use tokio::sync::mpsc;

use crate::{
    batcher::Weighted,
    intake::Job,
    models::{Encoded, Encoder, Images},
};

impl Weighted for Job {
    fn frames(&self) -> usize {
        self.job.frames.len()
    }
}

/// A batch after the model: the jobs, and either their outputs or why the
/// model failed on them.
pub struct Finished {
    pub jobs: Vec<Job>,
    pub outcome: candle_core::Result<Encoded>,
    pub compute_ms: u32,
}

/// Spawns the engine thread; it ends when `batches` closes.
pub fn spawn(
    encoder: Box<dyn Encoder>,
    mut batches: mpsc::Receiver<Vec<Job>>,
    finished: mpsc::Sender<Finished>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let (width, height) = encoder.input_size();
            let mut pixels = Vec::new();
            while let Some(jobs) = batches.blocking_recv() {
                let started = Instant::now();
                pixels.clear();
                for j in &jobs {
                    pixels.extend_from_slice(&j.job.pixels);
                }
                let count = jobs.iter().map(Weighted::frames).sum();
                let outcome = encoder.encode(Images {
                    pixels: &pixels,
                    count,
                    width,
                    height,
                });
                let compute_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
                tracing::debug!(jobs = jobs.len(), frames = count, compute_ms, "batch done");
                if finished
                    .blocking_send(Finished {
                        jobs,
                        outcome,
                        compute_ms,
                    })
                    .is_err()
                {
                    return;
                }
            }
        })
}
