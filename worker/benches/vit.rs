//! ViT encoder throughput on this machine, ours at several batch sizes:
//! real-size DINOv2 ViT-S/14 and ViT-B/14 (`facebook/dinov2-small` /
//! `-base` configs) and CLIP ViT-B/32 (`openai/clip-vit-base-patch32`),
//! random weights (the compute equals the real models'), 224² inputs.
//! scripts/bench_vit.sh runs PyTorch transformers on the same configs right
//! after, in its own process.
//!
//!     cargo bench --profile dev --workspace --bench vit
//!
//! Env: VIT_MODELS (default dinov2-small,dinov2-base,clip-b32), VIT_BATCHES
//! (1,8), VIT_IMAGES (32).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use worker::models::{clip, dinov2, encoder::Embed};

const SIDE: usize = 224;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// The model with random weights, and its embedding width.
fn model(name: &str, vb: VarBuilder) -> anyhow::Result<(Box<dyn Embed>, usize)> {
    let dinov2 = |hidden_size, num_attention_heads| dinov2::Config {
        hidden_size,
        num_attention_heads,
        image_size: 518,
        patch_size: 14,
        ..dinov2::Config::default()
    };
    // Any statistics: they do not change the compute.
    let stats = dinov2::Statistics {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    Ok(match name {
        "dinov2-small" => (
            Box::new(dinov2::Dinov2::new(
                &dinov2(384, 6),
                vb,
                SIDE,
                stats,
                dinov2::Pooling::Class,
            )?),
            384,
        ),
        "dinov2-base" => (
            Box::new(dinov2::Dinov2::new(
                &dinov2(768, 12),
                vb,
                SIDE,
                stats,
                dinov2::Pooling::Class,
            )?),
            768,
        ),
        "clip-b32" => {
            let cfg = clip::Config {
                projection_dim: 512,
                vision_config: clip::VisionConfig::default(),
                text_config: clip::TextConfig::default(),
            };
            (Box::new(clip::ClipVision::new(&cfg, vb, stats)?), 512)
        }
        other => anyhow::bail!("no model {other:?}: dinov2-small, dinov2-base or clip-b32"),
    })
}

fn main() -> anyhow::Result<()> {
    // As the worker runs.
    worker::heap::keep_freed_buffers();
    let images: usize = std::env::var("VIT_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let device = Device::Cpu;
    let frame = SIDE * SIDE * 3;
    let pixels: Vec<u8> = (0..images * frame).map(|i| (i * 7 % 251) as u8).collect();
    println!(
        "ViT encoders at 224², random weights, {} threads",
        rayon::current_num_threads()
    );
    println!("| implementation | model | batch | images | seconds | images/s |");
    println!("|---|---|---:|---:|---:|---:|");
    for name in env_list("VIT_MODELS", "dinov2-small,dinov2-base,clip-b32") {
        let varmap = VarMap::new();
        let (ours, dim) = model(&name, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
        // Warm-up: first touch of the weights and rayon's pool.
        ours.embed(&Tensor::from_slice(
            &pixels[..frame],
            (1, SIDE, SIDE, 3),
            &device,
        )?)?;
        for batch in env_list("VIT_BATCHES", "1,8") {
            let batch: usize = batch.parse()?;
            let total = images / batch * batch;
            let started = Instant::now();
            for start in (0..total).step_by(batch) {
                let rgb = Tensor::from_slice(
                    &pixels[start * frame..(start + batch) * frame],
                    (batch, SIDE, SIDE, 3),
                    &device,
                )?;
                let out = ours.embed(&rgb)?;
                anyhow::ensure!(out.dims() == [batch, dim], "{name}: {:?}", out.dims());
            }
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "| ours | {name} | {batch} | {total} | {seconds:.2} | {:.1} |",
                total as f64 / seconds
            );
        }
    }
    Ok(())
}
