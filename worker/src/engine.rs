//! The one thread that owns the model. Batches come in, outputs go out; no
//! lock, and nothing heavy ever runs on the async runtime.

use std::time::Instant;

use tokio::sync::mpsc;

use crate::{
    batcher::Weighted,
    heads::Head,
    intake::Job,
    models::{Images, Model, Outputs},
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
    pub outcome: candle_core::Result<Outputs>,
    pub compute_ms: u32,
}

/// Runs the model over `count` packed images at most `max_frames` at a
/// time: a job larger than the model batch (the producer's job size is a
/// transport choice) must not blow up activation memory.
fn infer_in_chunks(
    model: &dyn Model,
    pixels: &[u8],
    count: usize,
    (width, height): (usize, usize),
    max_frames: usize,
) -> candle_core::Result<Outputs> {
    let frame_bytes = width * height * 3;
    let mut all = Outputs::default();
    for chunk in pixels.chunks(max_frames * frame_bytes) {
        all.extend(model.infer(Images {
            pixels: chunk,
            count: chunk.len() / frame_bytes,
            width,
            height,
        })?);
    }
    let per_image = |len: usize| len == 0 || len == count;
    if all.embeddings.len() != count * all.dim
        || !per_image(all.labels.len())
        || !per_image(all.captions.len())
    {
        candle_core::bail!(
            "the model returned outputs for a different number of images than {count}"
        );
    }
    Ok(all)
}

/// Runs every head over the batch's embeddings.
fn with_heads(mut outputs: Outputs, heads: &[Head], count: usize) -> candle_core::Result<Outputs> {
    for head in heads {
        outputs
            .heads
            .push(head.outputs(&outputs.embeddings, count)?);
    }
    Ok(outputs)
}

/// What the engine thread owns and hands back when it ends.
pub type Loaded = (Box<dyn Model>, Vec<Head>);

/// Spawns the engine thread; it ends when `batches` or `finished` closes
/// and hands the model and heads back, for the next connection's run.
/// `heads` run on each batch's embeddings after the model.
pub fn spawn(
    model: Box<dyn Model>,
    heads: Vec<Head>,
    max_frames: usize,
    mut batches: mpsc::Receiver<Vec<Job>>,
    finished: mpsc::Sender<Finished>,
) -> std::io::Result<std::thread::JoinHandle<Loaded>> {
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let (width, height) = model.input_size();
            let mut pixels = Vec::new();
            while let Some(jobs) = batches.blocking_recv() {
                let started = Instant::now();
                pixels.clear();
                for j in &jobs {
                    pixels.extend_from_slice(&j.job.pixels);
                }
                let count = jobs.iter().map(Weighted::frames).sum();
                let outcome =
                    infer_in_chunks(model.as_ref(), &pixels, count, (width, height), max_frames)
                        .and_then(|outputs| with_heads(outputs, &heads, count));
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
                    break;
                }
            }
            (model, heads)
        })
}
