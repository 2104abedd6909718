//! CPU kernels the model families share, where candle's ops are the limit:
//! each falls back to candle's ops on other devices. `cuda.rs` holds the
//! few that also run on CUDA devices.

pub mod attention;
#[cfg(feature = "cuda")]
mod cuda;
pub mod depthwise;
pub mod exp;
pub mod gemm;
pub mod heads;
pub mod im2col;
pub mod linear;
mod lines;
pub mod mbconv;
pub mod norm;
pub mod pool;
pub mod softmax;
pub mod stem;

use rayon::prelude::*;

/// The zeroed output of an op over `batch` images. Where each image is
/// split among the threads (batch 1 on 2 threads), the other threads would
/// sit idle while the calling thread zeroed it, and then be woken for the
/// op itself: all of them zero it instead. EfficientNet-Lite0's stem output
/// at batch 1 (1.6 MB) took 95 µs to zero on one thread.
fn output(batch: usize, len: usize) -> Vec<f32> {
    if tasks_per_image(batch) == 1 {
        return vec![0f32; len];
    }
    let mut v = Vec::with_capacity(len);
    v.par_extend(rayon::iter::repeat_n(0f32, len));
    v
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_zeroed_whoever_zeroes_them() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a pool");
        for (batch, len) in [(1, 0), (1, 100_003), (2, 100_003), (3, 7)] {
            let y = pool.install(|| output(batch, len));
            assert_eq!(y.len(), len, "batch {batch}");
            assert!(y.iter().all(|&v| v == 0.0), "batch {batch}");
        }
    }
}
