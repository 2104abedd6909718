//! CPU kernels the model families share, where candle's ops are the limit:
//! each falls back to candle's ops on other devices.

pub mod attention;
pub mod depthwise;
pub mod exp;
pub mod gemm;
pub mod im2col;
pub mod linear;
mod lines;
pub mod mbconv;
pub mod pool;
pub mod softmax;
pub mod stem;

/// Runs a whole forward pass on a thread of rayon's pool. Called from
/// outside the pool, each of the kernels' parallel steps parks the calling
/// thread until the step ends and wakes it again (~40 times per
/// EfficientNet-Lite0 image: batch 1 ran 13 % faster in the pool).
pub fn in_pool<R: Send>(pass: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| pass())
}

/// Tasks each image of a batch splits into (ranges of its output rows) so
/// that every thread gets the same number: one when the batch divides
/// evenly among the threads.
fn tasks_per_image(batch: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    threads / gcd(batch.max(1), threads)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
