//! Encoder throughput on this machine, side by side in one run:
//! EfficientNet-Lite0 images/s at several batch sizes, and our depthwise
//! kernel against candle's grouped convolution on the model's largest
//! depthwise layer. Needs the converted model (`FF_MODEL_DIR`, set by
//! scripts/setup.sh). Run: `scripts/bench.sh`.

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use worker::models::{EffnetEncoder, Images, Model, kernels::depthwise};

fn time<T>(min: Duration, mut f: impl FnMut() -> T) -> (f64, usize) {
    f(); // warm-up
    let start = Instant::now();
    let mut runs = 0;
    while start.elapsed() < min || runs < 3 {
        std::hint::black_box(f());
        runs += 1;
    }
    (start.elapsed().as_secs_f64() / runs as f64, runs)
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::var("FF_MODEL_DIR")
        .map_err(|_| anyhow::anyhow!("set FF_MODEL_DIR (scripts/setup.sh does)"))?;
    let encoder = EffnetEncoder::load(std::path::Path::new(&dir), &Device::Cpu)?;
    let (w, h) = encoder.input_size();
    println!("| batch | ms/batch | images/s | vs batch 1 |");
    println!("|---:|---:|---:|---:|");
    let mut base = 0.0;
    for batch in [1usize, 8, 32] {
        let pixels: Vec<u8> = (0..batch * w * h * 3)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let images = Images {
            pixels: &pixels,
            count: batch,
            width: w,
            height: h,
        };
        let (secs, _) = time(Duration::from_secs(3), || {
            encoder.infer(images).map(|e| e.dim)
        });
        let ips = batch as f64 / secs;
        if batch == 1 {
            base = ips;
        }
        println!(
            "| {batch} | {:.1} | {ips:.1} | {:.2}x |",
            secs * 1e3,
            ips / base
        );
    }

    let x = Tensor::randn(0f32, 1.0, (8, 1152, 7, 7), &Device::Cpu)?;
    let k = Tensor::randn(0f32, 1.0, (1152, 1, 5, 5), &Device::Cpu)?;
    let (ours, _) = time(Duration::from_secs(2), || {
        depthwise::depthwise_same(&x, &k, 1)
    });
    let padded = x.pad_with_zeros(2, 2, 2)?.pad_with_zeros(3, 2, 2)?;
    let (candle, _) = time(Duration::from_secs(2), || padded.conv2d(&k, 0, 1, 1, 1152));
    println!();
    println!("| depthwise 5x5, [8, 1152, 7, 7] | ms |");
    println!("|---|---:|");
    println!("| ours | {:.2} |", ours * 1e3);
    println!(
        "| candle conv2d, groups = 1152 | {:.2} ({:.0}x slower) |",
        candle * 1e3,
        candle / ours
    );
    Ok(())
}
