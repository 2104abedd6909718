//! DINOv2 encoder throughput on this machine, ours at several batch sizes:
//! real-size ViT-S/14 and ViT-B/14 (`facebook/dinov2-small` / `-base`
//! configs, random weights: the compute equals the real models') on 224²
//! inputs. scripts/bench_dinov2.sh runs PyTorch transformers on the same
//! configs right after, in its own process.
//!
//!     cargo bench --profile dev --bench dinov2
//!
//! Env: DINOV2_MODELS (default small,base), DINOV2_BATCHES (1,8),
//! DINOV2_IMAGES (32).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use worker::models::dinov2::{Config, Dinov2, Statistics};

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(str::to_owned)
        .collect()
}

fn config(model: &str) -> anyhow::Result<Config> {
    let (hidden_size, num_attention_heads) = match model {
        "small" => (384, 6),
        "base" => (768, 12),
        other => anyhow::bail!("no DINOv2 config {other:?}: small or base"),
    };
    Ok(Config {
        hidden_size,
        num_attention_heads,
        image_size: 518,
        patch_size: 14,
        ..Config::default()
    })
}

fn main() -> anyhow::Result<()> {
    let images: usize = std::env::var("DINOV2_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let device = Device::Cpu;
    let side = 224;
    let frame = side * side * 3;
    let pixels: Vec<u8> = (0..images * frame).map(|i| (i * 7 % 251) as u8).collect();
    let stats = Statistics {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    println!(
        "DINOv2 at 224², random weights, {} threads",
        rayon::current_num_threads()
    );
    println!("| implementation | model | batch | images | seconds | images/s |");
    println!("|---|---|---:|---:|---:|---:|");
    for model in env_list("DINOV2_MODELS", "small,base") {
        let cfg = config(&model)?;
        let varmap = VarMap::new();
        let ours = Dinov2::new(
            &cfg,
            VarBuilder::from_varmap(&varmap, DType::F32, &device),
            side,
            stats,
        )?;
        // Warm-up: first touch of the weights and rayon's pool.
        ours.embed(&Tensor::from_slice(
            &pixels[..frame],
            (1, side, side, 3),
            &device,
        )?)?;
        for batch in env_list("DINOV2_BATCHES", "1,8") {
            let batch: usize = batch.parse()?;
            let total = images / batch * batch;
            let started = Instant::now();
            for start in (0..total).step_by(batch) {
                let rgb = Tensor::from_slice(
                    &pixels[start * frame..(start + batch) * frame],
                    (batch, side, side, 3),
                    &device,
                )?;
                let out = ours.embed(&rgb)?;
                assert_eq!(out.dims(), &[batch, cfg.hidden_size]);
            }
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "| ours | dinov2-{model} | {batch} | {total} | {seconds:.2} | {:.1} |",
                total as f64 / seconds
            );
        }
    }
    Ok(())
}
