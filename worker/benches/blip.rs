//! BLIP captioning throughput on this machine, side by side in one run:
//! ours at several batch sizes against candle-transformers' BLIP, one image
//! at a time as its example runs it. Both use the same random weights of a
//! real-size `blip-image-captioning-base` and generate exactly STEPS tokens
//! per image, so the compute equals the real model's.
//! scripts/bench_blip.sh adds PyTorch transformers to the same run.
//!
//!     cargo bench -p worker --features bench-reference --bench blip
//!
//! Env: BLIP_BATCHES (default 1,4,8,16), BLIP_STEPS (20), BLIP_IMAGES (16),
//! BLIP_REFERENCE_IMAGES (2), BLIP_DTYPES (f32; `f32,bf16` adds ours with
//! bf16 products, as `--dtype bf16` runs on the CPU, on the same weights).

use std::time::Instant;

use anyhow::Context;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::{blip as reference, blip_text};
use worker::models::{
    blip::{Blip, Config, Limits, TextConfig, VisionConfig},
    kernels::gemm::Products,
};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn base_config() -> Config {
    Config {
        vision_config: VisionConfig::default(),
        text_config: TextConfig {
            num_attention_heads: 12,
            ..TextConfig::default()
        },
    }
}

fn reference_config(ours: &Config) -> reference::Config {
    let (v, t) = (&ours.vision_config, &ours.text_config);
    reference::Config {
        text_config: blip_text::Config {
            vocab_size: t.vocab_size,
            hidden_size: t.hidden_size,
            encoder_hidden_size: v.hidden_size,
            intermediate_size: t.intermediate_size,
            projection_dim: t.hidden_size,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            max_position_embeddings: t.max_position_embeddings,
            hidden_act: candle_nn::Activation::Gelu,
            layer_norm_eps: t.layer_norm_eps,
            is_decoder: true,
        },
        vision_config: reference::VisionConfig {
            hidden_size: v.hidden_size,
            intermediate_size: v.intermediate_size,
            projection_dim: 512,
            num_hidden_layers: v.num_hidden_layers,
            num_attention_heads: v.num_attention_heads,
            image_size: v.image_size,
            patch_size: v.patch_size,
            hidden_act: candle_nn::Activation::Gelu,
            layer_norm_eps: v.layer_norm_eps,
        },
        projection_dim: 512,
        image_text_hidden_size: 256,
    }
}

/// Deterministic images with structure (gradients and stripes).
fn images(count: usize, size: usize) -> Vec<u8> {
    let mut px = Vec::with_capacity(count * size * size * 3);
    for i in 0..count {
        for y in 0..size {
            for x in 0..size {
                px.push(((x * (i + 1)) % 256) as u8);
                px.push(((y * 3 + i * 40) % 256) as u8);
                px.push((((x / 8 + y / 8 + i) % 2) * 200) as u8);
            }
        }
    }
    px
}

struct Row {
    name: String,
    batch: usize,
    images: usize,
    seconds: f64,
}

fn main() -> anyhow::Result<()> {
    // As the worker runs.
    worker::heap::keep_freed_buffers();
    let batches: Vec<usize> = std::env::var("BLIP_BATCHES")
        .unwrap_or_else(|_| "1,4,8,16".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let steps: usize = env_or("BLIP_STEPS", 20);
    let n_images: usize = env_or("BLIP_IMAGES", 16);
    let n_reference: usize = env_or("BLIP_REFERENCE_IMAGES", 2);
    let device = Device::Cpu;
    let cfg = base_config().resolve().map_err(anyhow::Error::msg)?;
    let size = cfg.vision_config.image_size;

    // One set of random weights shared by both implementations.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let mut theirs =
        reference::BlipForConditionalGeneration::new(&reference_config(&cfg), vb.clone())?;
    let ours = std::env::var("BLIP_DTYPES")
        .unwrap_or_else(|_| "f32".into())
        .split(',')
        .map(|dtype| {
            let (name, products) = match dtype {
                "f32" => ("ours", Products::F32),
                "bf16" => ("ours bf16", Products::Bf16),
                other => anyhow::bail!("BLIP_DTYPES: {other:?} is neither f32 nor bf16"),
            };
            Ok((name, Blip::new(&cfg, vb.clone(), products)?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (_, first) = ours.first().context("BLIP_DTYPES is empty")?;
    let pixels = images(n_images.max(*batches.iter().max().unwrap_or(&1)), size);
    let frame = size * size * 3;
    let limits = Limits {
        max_tokens: steps,
        min_tokens: steps,
    };
    let mut rows = Vec::new();

    for (name, ours) in &ours {
        // Warm-up: first-touch of the weights and rayon's pool.
        ours.caption(
            &Tensor::from_slice(&pixels[..frame], (1, size, size, 3), &device)?,
            &[],
            Limits {
                max_tokens: 2,
                min_tokens: 2,
            },
        )?;

        for &batch in &batches {
            let total = n_images.max(batch).div_ceil(batch) * batch;
            let started = Instant::now();
            for start in (0..total).step_by(batch) {
                let idx = start % (pixels.len() / frame - batch + 1);
                let rgb = Tensor::from_slice(
                    &pixels[idx * frame..(idx + batch) * frame],
                    (batch, size, size, 3),
                    &device,
                )?;
                let ids = ours.caption(&rgb, &[], limits)?;
                assert!(ids.iter().all(|r| r.len() == steps));
            }
            rows.push(Row {
                name: name.to_string(),
                batch,
                images: total,
                seconds: started.elapsed().as_secs_f64(),
            });
            eprintln!("{name} batch {batch}: done");
        }
    }

    // candle-transformers, as its blip example runs: NCHW input, one image,
    // the decoder fed one token at a time with its own KV cache.
    let started = Instant::now();
    for i in 0..n_reference {
        let rgb = Tensor::from_slice(
            &pixels[i * frame..(i + 1) * frame],
            (1, size, size, 3),
            &device,
        )?;
        let input = first
            .vision
            .normalise(&rgb)?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        let image_embeds = theirs.vision_model().forward(&input)?;
        theirs.reset_kv_cache();
        let mut token = cfg.text_config.bos_token_id;
        for _ in 0..steps {
            let ids = Tensor::new(&[token], &device)?.unsqueeze(0)?;
            let logits = theirs.text_decoder().forward(&ids, &image_embeds)?;
            let last = logits.squeeze(0)?.get(0)?;
            token = last.argmax(D::Minus1)?.to_scalar::<u32>()?;
        }
    }
    rows.push(Row {
        name: "candle-transformers".into(),
        batch: 1,
        images: n_reference,
        seconds: started.elapsed().as_secs_f64(),
    });

    let reference_rate = n_reference as f64 / rows.last().map_or(1.0, |r| r.seconds);
    println!(
        "blip-base, random weights, {steps} tokens per image, {} threads",
        rayon::current_num_threads()
    );
    println!(
        "| implementation | batch | images | seconds | images/s | tokens/s | vs candle-transformers |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let rate = r.images as f64 / r.seconds;
        println!(
            "| {} | {} | {} | {:.1} | {:.3} | {:.1} | {:.2}x |",
            r.name,
            r.batch,
            r.images,
            r.seconds,
            rate,
            rate * steps as f64,
            rate / reference_rate
        );
    }
    Ok(())
}
