//! Throughput on a GPU, for the GPU table: BLIP captioning at the
//! real shapes of `blip-image-captioning-base` and `-large` (random
//! weights, exactly GPU_STEPS generated tokens per image, greedy) and
//! EfficientNet-Lite0 embedding (the converted model in FF_MODEL_DIR, as
//! the worker runs it: u8 pixels in, embeddings and top-5 labels out), at
//! GPU batch sizes; for BLIP also the image encoder alone, to split the
//! time. scripts/bench_gpu.sh runs PyTorch on the same GPU beside it
//! (scripts/bench_gpu_torch.py) and prints both.
//!
//! Built for CUDA by `scripts/build-cuda.sh` (the `bench-gpu-cuda.gz` it
//! writes); runs on any candle device, so `GPU_DEVICE=cpu GPU_TINY=1`
//! checks the benchmark itself on a machine without a GPU.
//!
//! Env: GPU_DEVICE (cuda:0), GPU_BLIP (base,large), GPU_DTYPES (f32,bf16),
//! GPU_BATCHES (8,32,64), GPU_STEPS (20), GPU_EFFNET_BATCHES (8,64,256;
//! empty skips), GPU_SECONDS (2: each row runs whole batches for at least
//! this long, after one untimed batch), GPU_TINY (a 2-layer BLIP),
//! GPU_LAYER_OPS (a batch size: then also each op of one BLIP-large
//! image-encoder layer timed alone at that batch, in each dtype, to show
//! where the encoder's time goes), GPU_DECODE_OPS (a batch size: the same
//! for one step of BLIP-large's caption decoder).
//!
//! First it checks the kernels of ours the models run on CUDA
//! (`kernels/cuda.rs`): bf16 self-attention against the same attention in
//! f32 from the same values, beside candle's ops in bf16, one query's
//! attention (a decoding step's) against candle's ops in f32, the dense
//! layers' bias + activation (+ skip connection) against candle's ops in
//! f32 from the same GEMM output, and LayerNorm against candle-nn's; it
//! fails past 2 % (bf16) or 1e-5 (f32) of the output's range: a fast wrong
//! kernel is not a result.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use worker::models::{
    EffnetEncoder, Images, Model,
    blip::{Blip, Config, Limits, TextConfig, VisionConfig},
    kernels::{
        attention::{attend, self_attention},
        gemm::Products,
        heads::{merge_heads, split_heads},
        linear::{Activation, Linear, precision},
        norm::layer_norm,
        softmax::softmax_last_dim,
    },
};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

fn list<T: std::str::FromStr>(name: &str, default: &str) -> anyhow::Result<Vec<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    env_or(name, default)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().with_context(|| format!("{name}: {s:?}")))
        .collect()
}

/// transformers' configs of the two public checkpoints; `tiny` keeps their
/// input and vocabulary with two narrow layers per tower.
fn blip_config(name: &str, tiny: bool) -> anyhow::Result<Config> {
    let (vision, text) = match name {
        "base" => (VisionConfig::default(), TextConfig::default()),
        "large" => (
            VisionConfig {
                hidden_size: 1024,
                intermediate_size: 4096,
                num_hidden_layers: 24,
                num_attention_heads: 16,
                ..VisionConfig::default()
            },
            TextConfig::default(),
        ),
        other => anyhow::bail!("GPU_BLIP: {other:?} is neither base nor large"),
    };
    let text = TextConfig {
        num_attention_heads: 12,
        ..text
    };
    let cfg = if tiny {
        Config {
            vision_config: VisionConfig {
                hidden_size: 64,
                intermediate_size: 128,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                ..vision
            },
            text_config: TextConfig {
                hidden_size: 64,
                intermediate_size: 128,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                ..text
            },
        }
    } else {
        Config {
            vision_config: vision,
            text_config: text,
        }
    };
    cfg.resolve().map_err(anyhow::Error::msg)
}

fn dtype(name: &str) -> anyhow::Result<DType> {
    Ok(match name {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        other => anyhow::bail!("GPU_DTYPES: {other:?} is neither f32 nor bf16"),
    })
}

/// Deterministic images with structure (gradients and stripes).
fn images(count: usize, size: usize) -> Vec<u8> {
    let mut px = Vec::with_capacity(count * size * size * 3);
    for i in 0..count {
        for y in 0..size {
            for x in 0..size {
                px.extend([
                    ((x * (i + 1)) % 256) as u8,
                    ((y * 3 + i * 40) % 256) as u8,
                    (((x / 8 + y / 8 + i) % 2) * 200) as u8,
                ]);
            }
        }
    }
    px
}

/// Images per second of `run` on whole batches of `batch`: one untimed
/// batch, then batches until `min` has passed (two at least).
fn rate(
    batch: usize,
    min: Duration,
    mut run: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    run()?;
    let started = Instant::now();
    let mut done = 0;
    while done < 2 || started.elapsed() < min {
        run()?;
        done += 1;
    }
    Ok((done * batch) as f64 / started.elapsed().as_secs_f64())
}

fn row(model: &str, dtype: &str, batch: usize, rate: f64, extra: &str) {
    println!("| ours | {model} | {dtype} | {batch} | {rate:.2} | {extra} |");
}

fn blip(
    device: &Device,
    name: &str,
    dtypes: &[String],
    batches: &[usize],
    steps: usize,
    min: Duration,
) -> anyhow::Result<()> {
    let tiny = std::env::var_os("GPU_TINY").is_some();
    let cfg = blip_config(name, tiny)?;
    let size = cfg.vision_config.image_size;
    // Random f32 weights made on the device once; each dtype is a cast of
    // them, as a checkpoint loaded in that dtype would be.
    let varmap = VarMap::new();
    Blip::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, device),
        Products::F32,
    )?;
    let weights: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned VarMap"))?
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect();
    let largest = batches.iter().copied().max().unwrap_or(1);
    let rgb = Tensor::from_vec(
        images(largest, size),
        (largest, size, size, 3),
        &Device::Cpu,
    )?;
    let limits = Limits {
        max_tokens: steps,
        min_tokens: steps,
    };
    let label = format!("blip-{name}{}", if tiny { "-tiny" } else { "" });
    let mut all_ran = true;
    for name_dtype in dtypes {
        // A dtype the device cannot run is reported, and the rest go on.
        let run = || -> anyhow::Result<()> {
            // As the worker loads it: on the CPU, bf16 is bf16 products.
            let (dt, products) = precision(device, dtype(name_dtype)?);
            let cast = weights
                .iter()
                .map(|(n, t)| Ok((n.clone(), t.to_dtype(dt)?)))
                .collect::<candle_core::Result<HashMap<_, _>>>()?;
            let model = Blip::new(&cfg, VarBuilder::from_tensors(cast, dt, device), products)?;
            for &batch in batches {
                // The worker's path: u8 pixels copied to the device per batch.
                let pixels = rgb.narrow(0, 0, batch)?;
                let r = rate(batch, min, || {
                    let ids = model.caption(&pixels.to_device(device)?, &[], limits)?;
                    anyhow::ensure!(ids.iter().all(|c| c.len() == steps), "short caption");
                    Ok(())
                })?;
                // The image encoder alone, to split the time.
                let vision = rate(batch, min, || {
                    let rgb = pixels.to_device(device)?;
                    let tokens = model.vision.forward(&model.vision.normalise(&rgb)?)?;
                    tokens.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                    Ok(())
                })?;
                let split = format!(
                    "{:.1} tokens/s; image encoder alone {vision:.2} images/s",
                    r * steps as f64
                );
                row(&label, name_dtype, batch, r, &split);
            }
            Ok(())
        };
        if let Err(e) = run() {
            println!("| ours | {label} | {name_dtype} | | failed | {e:#} |");
            all_ran = false;
        }
    }
    anyhow::ensure!(all_ran, "a dtype failed (its row says why)");
    Ok(())
}

fn effnet(device: &Device, batches: &[usize], min: Duration) -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::var_os("FF_MODEL_DIR")
            .context("FF_MODEL_DIR: the converted EfficientNet-Lite0")?,
    );
    let model = EffnetEncoder::load(&dir, device)?;
    let (width, height) = model.input_size();
    let largest = batches.iter().copied().max().unwrap_or(1);
    let pixels = images(largest, width.max(height));
    for &batch in batches {
        let r = rate(batch, min, || {
            let out = model.infer(Images {
                pixels: &pixels[..batch * width * height * 3],
                count: batch,
                width,
                height,
            })?;
            anyhow::ensure!(out.embeddings.len() == batch * out.dim, "short output");
            Ok(())
        })?;
        row("efficientnet-lite0", "f32", batch, r, "");
    }
    Ok(())
}

/// Milliseconds per call of `op`, the device synchronised around 20 calls
/// after 3 untimed ones.
fn millis(
    device: &Device,
    mut op: impl FnMut() -> candle_core::Result<Tensor>,
) -> anyhow::Result<f64> {
    for _ in 0..3 {
        op()?;
    }
    device.synchronize()?;
    let started = Instant::now();
    for _ in 0..20 {
        op()?;
    }
    device.synchronize()?;
    Ok(started.elapsed().as_secs_f64() * 1e3 / 20.0)
}

/// Self-attention as candle's ops run it: split, q·kᵀ, softmax, p·v, merge.
fn attention_by_ops(qkv: &Tensor, heads: usize, scale: f64) -> candle_core::Result<Tensor> {
    let parts = split_heads(qkv, 3, heads, scale)?;
    let probs = softmax_last_dim(&parts[0].matmul(&parts[1].t()?)?)?;
    merge_heads(&probs.matmul(&parts[2])?)
}

/// bf16 self-attention (`self_attention`: the fused kernel where it
/// serves) and candle's ops in bf16 against f32 from the same bf16 values,
/// at the token counts of the ViTs here (CLIP B/32: 50, DINOv2 at 224²:
/// 257, BLIP at 384²: 577) and an edge (1). Scores of a few units, so
/// that the softmax is peaked as in a trained model. Then `attend` for one
/// query per (image, head) (the decoding kernel where it serves), f32 and
/// bf16, against candle's ops in f32.
fn attention_check(device: &Device) -> anyhow::Result<()> {
    println!("\nbf16 self-attention against f32 (max |error| / max |f32 output|)");
    println!("| batch × tokens × heads | self_attention | candle's ops |");
    println!("|---|---:|---:|");
    let mut worst = 0f32;
    for (batch, tokens, heads) in [(2, 577, 16), (3, 257, 12), (5, 50, 12), (4, 1, 12)] {
        let qkv = Tensor::randn(0f32, 1.0, (batch, tokens, 3 * heads * 64), device)?
            .to_dtype(DType::BF16)?;
        let exact = self_attention(
            &qkv.to_dtype(DType::F32)?,
            heads,
            0.125,
            None,
            Products::F32,
        )?;
        let range = exact.abs()?.max_all()?.to_scalar::<f32>()?;
        let error = |t: Tensor| -> anyhow::Result<f32> {
            let diff = (t.to_dtype(DType::F32)? - &exact)?.abs()?.max_all()?;
            Ok(diff.to_scalar::<f32>()? / range)
        };
        let ours = error(self_attention(&qkv, heads, 0.125, None, Products::F32)?)?;
        let ops = error(attention_by_ops(&qkv, heads, 0.125)?)?;
        println!("| {batch} × {tokens} × {heads} | {ours:.2e} | {ops:.2e} |");
        worst = worst.max(ours);
    }
    anyhow::ensure!(worst <= 0.02, "bf16 self-attention is {worst:.2e} off f32");

    // One query per (image, head): a decoding step's cross-attention.
    println!("\nOne query against N keys (`attend`) against candle's ops in f32");
    println!("| dtype | batch × heads × keys | max |error| / max |output| |");
    println!("|---|---|---:|");
    let mut failed = Vec::new();
    for (dt, limit) in [(DType::F32, 1e-5f32), (DType::BF16, 0.02)] {
        for (batch, heads, keys) in [(3, 12, 577), (2, 12, 50), (4, 12, 1)] {
            let rand = |t: usize| -> anyhow::Result<Tensor> {
                Ok(Tensor::randn(0f32, 1.0, (batch, heads, t, 64), device)?.to_dtype(dt)?)
            };
            let (q, k, v) = ((rand(1)? * 0.125)?, rand(keys)?, rand(keys)?);
            let f32 = |t: &Tensor| t.to_dtype(DType::F32);
            let exact = softmax_last_dim(&f32(&q)?.matmul(&f32(&k)?.t()?)?)?.matmul(&f32(&v)?)?;
            let range = exact.abs()?.max_all()?.to_scalar::<f32>()?;
            let diff = (f32(&attend(&q, &k, &v, None)?)? - &exact)?
                .abs()?
                .max_all()?;
            let error = diff.to_scalar::<f32>()? / range;
            println!("| {dt:?} | {batch} × {heads} × {keys} | {error:.2e} |");
            if error > limit {
                failed.push(format!("{dt:?} {keys} keys: {error:.2e}"));
            }
        }
    }
    anyhow::ensure!(failed.is_empty(), "attend off: {}", failed.join(", "));
    Ok(())
}

/// `Linear`'s bias + activation (and skip connection) after the GEMM
/// against candle's ops in f32 on the same GEMM output, and `LayerNorm`
/// against candle-nn's in f32 on the same values, in f32 and bf16, on rows
/// that take 16-byte accesses (1024 columns) and rows that do not (1001).
fn dense_check(device: &Device) -> anyhow::Result<()> {
    println!(
        "\nDense layers' bias + activation, + residual, and LayerNorm against candle's ops in f32 \
         (max |error| / max |output|)"
    );
    println!("| dtype | columns | identity | GELU | QuickGELU | ReLU6 | + residual | LayerNorm |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut failed = Vec::new();
    for (dt, limit) in [(DType::F32, 1e-5f32), (DType::BF16, 0.02)] {
        for cols in [1024, 1001] {
            let rand = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, device)?.to_dtype(dt);
            let (x, w, b) = (rand(&[300, 64])?, rand(&[cols, 64])?, rand(&[cols])?);
            let gemm = x.matmul(&w.t()?)?.to_dtype(DType::F32)?;
            let y = gemm.broadcast_add(&b.to_dtype(DType::F32)?)?;
            let mut cells = Vec::new();
            for act in [
                Activation::Identity,
                Activation::Gelu,
                Activation::QuickGelu,
                Activation::Relu6,
            ] {
                let exact = match act {
                    Activation::Identity => y.clone(),
                    Activation::Gelu => y.gelu_erf()?,
                    Activation::QuickGelu => (&y * candle_nn::ops::sigmoid(&(&y * 1.702)?)?)?,
                    Activation::Relu6 => y.clamp(0f32, 6f32)?,
                };
                let ours = Linear::new(w.clone(), b.clone(), act)?.forward(&x)?;
                let range = exact.abs()?.max_all()?.to_scalar::<f32>()?;
                let diff = (ours.to_dtype(DType::F32)? - &exact)?.abs()?.max_all()?;
                let error = diff.to_scalar::<f32>()? / range;
                if error > limit {
                    failed.push(format!("{dt:?} {cols} {act:?}: {error:.2e}"));
                }
                cells.push(format!("{error:.2e}"));
            }
            // The skip connection added in the same pass, and LayerNorm.
            let exact = (&y + x.matmul(&w.t()?)?.to_dtype(DType::F32)?)?;
            let residual = Linear::new(w.clone(), b.clone(), Activation::Identity)?
                .forward_residual(&x, &x.matmul(&w.t()?)?)?;
            let norm = layer_norm(
                cols,
                1e-5,
                VarBuilder::from_tensors(
                    HashMap::from([("weight".into(), b.clone()), ("bias".into(), b.clone())]),
                    dt,
                    device,
                ),
            )?;
            let wide = (&gemm * 3.0)?.to_dtype(dt)?;
            let b32 = b.to_dtype(DType::F32)?;
            let normed = candle_nn::ops::layer_norm(&wide.to_dtype(DType::F32)?, &b32, &b32, 1e-5)?;
            for (label, ours, exact) in [
                ("residual", residual, exact),
                ("LayerNorm", norm.forward(&wide)?, normed),
            ] {
                let range = exact.abs()?.max_all()?.to_scalar::<f32>()?;
                let diff = (ours.to_dtype(DType::F32)? - &exact)?.abs()?.max_all()?;
                let error = diff.to_scalar::<f32>()? / range;
                if error > limit {
                    failed.push(format!("{dt:?} {cols} {label}: {error:.2e}"));
                }
                cells.push(format!("{error:.2e}"));
            }
            println!("| {dt:?} | {cols} | {} |", cells.join(" | "));
        }
    }
    anyhow::ensure!(failed.is_empty(), "dense layers off: {}", failed.join(", "));
    Ok(())
}

/// Each op of one BLIP-large image-encoder layer (pre-norm ViT-L/16 at
/// 384², 577 tokens) alone, on random values: the encoder's time split by
/// op. The layer runs 2 norms, 4 dense layers, the heads' split, two
/// batched products with a softmax between, the merge and 2 residual adds.
fn layer_ops(device: &Device, dt: DType, name: &str, batch: usize) -> anyhow::Result<()> {
    let (tokens, hidden, heads, mlp) = (577, 1024, 16, 4096);
    let rows = batch * tokens;
    // As the worker runs `dt` here: on the CPU, bf16 is bf16 products.
    let (dt, products) = precision(device, dt);
    let rand = |shape: &[usize]| Tensor::randn(0f32, 0.5, shape, device)?.to_dtype(dt);
    let dense =
        |i: usize, o: usize, act| Linear::with_products(rand(&[o, i])?, rand(&[o])?, act, products);
    let x = rand(&[batch, tokens, hidden])?;
    let (gamma, beta) = (rand(&[hidden])?, rand(&[hidden])?);
    let norm = layer_norm(
        hidden,
        1e-5,
        VarBuilder::from_tensors(
            HashMap::from([
                ("weight".into(), gamma.clone()),
                ("bias".into(), beta.clone()),
            ]),
            dt,
            device,
        ),
    )?;
    let (qkv, out) = (
        dense(hidden, 3 * hidden, Activation::Identity)?,
        dense(hidden, hidden, Activation::Identity)?,
    );
    let (fc1, fc2) = (
        dense(hidden, mlp, Activation::Gelu)?,
        dense(mlp, hidden, Activation::Identity)?,
    );
    let projected = qkv.forward(&x)?;
    let parts = split_heads(&projected, 3, heads, 0.125)?;
    let scores = parts[0].matmul(&parts[1].t()?)?;
    let probs = softmax_last_dim(&scores)?;
    let attended = probs.matmul(&parts[2])?;
    let wide = rand(&[batch, tokens, mlp])?;
    let (flat, w_qkv) = (x.reshape((rows, hidden))?, rand(&[3 * hidden, hidden])?);
    let gemm = |n: usize, k: usize| 2.0 * (rows * n * k) as f64;
    let ops: Vec<(&str, f64, f64)> = vec![
        ("layer norm", millis(device, || norm.forward(&x))?, 0.0),
        (
            "layer norm, candle's",
            millis(device, || {
                candle_nn::ops::layer_norm(&x, &gamma, &beta, 1e-5)
            })?,
            0.0,
        ),
        (
            "q,k,v GEMM alone",
            millis(device, || flat.matmul(&w_qkv.t()?))?,
            gemm(3 * hidden, hidden),
        ),
        (
            "q,k,v dense (GEMM + bias)",
            millis(device, || qkv.forward(&x))?,
            gemm(3 * hidden, hidden),
        ),
        (
            "split into heads",
            millis(device, || {
                Ok(split_heads(&projected, 3, heads, 0.125)?.remove(0))
            })?,
            0.0,
        ),
        (
            "q·kᵀ",
            millis(device, || parts[0].matmul(&parts[1].t()?))?,
            2.0 * (batch * heads * tokens * tokens * 64) as f64,
        ),
        (
            "softmax",
            millis(device, || softmax_last_dim(&scores))?,
            0.0,
        ),
        (
            "p·v",
            millis(device, || probs.matmul(&parts[2]))?,
            2.0 * (batch * heads * tokens * tokens * 64) as f64,
        ),
        (
            "merge heads",
            millis(device, || merge_heads(&attended))?,
            0.0,
        ),
        (
            "attention as run (split to merge; fused where it serves)",
            millis(device, || {
                self_attention(&projected, heads, 0.125, None, products)
            })?,
            4.0 * (batch * heads * tokens * tokens * 64) as f64,
        ),
        (
            "output dense + residual",
            millis(device, || out.forward_residual(&x, &x))?,
            gemm(hidden, hidden),
        ),
        ("residual add alone", millis(device, || &x + &x)?, 0.0),
        (
            "MLP up dense + GELU",
            millis(device, || fc1.forward(&x))?,
            gemm(mlp, hidden),
        ),
        (
            "MLP down dense + residual",
            millis(device, || fc2.forward_residual(&wide, &x))?,
            gemm(hidden, mlp),
        ),
    ];
    // Per layer: every op once, but 2 norms; the attention as run, not its
    // parts by candle's ops; the residual adds in the dense layers' passes.
    let twice = ["layer norm"];
    let apart = [
        "layer norm, candle's",
        "q,k,v GEMM alone",
        "split into heads",
        "q·kᵀ",
        "softmax",
        "p·v",
        "merge heads",
        "residual add alone",
    ];
    let total: f64 = ops
        .iter()
        .filter(|(op, ..)| !apart.contains(op))
        .map(|(op, ms, _)| if twice.contains(op) { 2.0 * ms } else { *ms })
        .sum();
    println!(
        "\nOne BLIP-large encoder layer, {name}, batch {batch} ({rows} tokens): each op alone"
    );
    println!("| op | ms | TFLOP/s |");
    println!("|---|---:|---:|");
    for (op, ms, flop) in &ops {
        let rate = if *flop > 0.0 {
            format!("{:.1}", flop / ms / 1e9)
        } else {
            String::new()
        };
        println!("| {op} | {ms:.3} | {rate} |");
    }
    println!("| the layer (sum; norms twice) | {total:.3} | |");
    Ok(())
}

/// Each op of one step of BLIP-large's caption decoder (BERT-base, 12
/// layers, cross-attention to 577 image tokens of 1024), as `blip/text.rs`
/// runs it, at `batch` images with 10 tokens cached: the decoding time
/// split by op. Per layer: q, k, v dense and split, the cache append,
/// self-attention, its output dense + residual and norm, the cross query,
/// cross-attention over the image tokens, its output and norm, the MLP and
/// its norm; per step: the LM head.
fn decode_ops(device: &Device, dt: DType, name: &str, batch: usize) -> anyhow::Result<()> {
    let (hidden, heads, mlp, image, vocab, past) = (768, 12, 3072, 577, 30524, 10);
    // As the worker runs `dt` here: on the CPU, bf16 is bf16 products.
    let (dt, products) = precision(device, dt);
    let rand = |shape: &[usize]| Tensor::randn(0f32, 0.5, shape, device)?.to_dtype(dt);
    let dense =
        |i: usize, o: usize, act| Linear::with_products(rand(&[o, i])?, rand(&[o])?, act, products);
    let x = rand(&[batch, 1, hidden])?;
    let (qkv, q, out) = (
        dense(hidden, 3 * hidden, Activation::Identity)?,
        dense(hidden, hidden, Activation::Identity)?,
        dense(hidden, hidden, Activation::Identity)?,
    );
    let (up, down) = (
        dense(hidden, mlp, Activation::Gelu)?,
        dense(mlp, hidden, Activation::Identity)?,
    );
    let norm = layer_norm(
        hidden,
        1e-12,
        VarBuilder::from_tensors(
            HashMap::from([
                ("weight".into(), rand(&[hidden])?),
                ("bias".into(), rand(&[hidden])?),
            ]),
            dt,
            device,
        ),
    )?;
    let lm_head = dense(hidden, vocab, Activation::Identity)?;
    let projected = qkv.forward(&x)?;
    let query = split_heads(&projected, 3, heads, 0.125)?.remove(0);
    let keys = rand(&[batch, heads, past, 64])?;
    let (image_k, image_v) = (
        rand(&[batch, heads, image, 64])?,
        rand(&[batch, heads, image, 64])?,
    );
    let by_ops = |k: &Tensor, v: &Tensor| -> candle_core::Result<Tensor> {
        softmax_last_dim(&query.matmul(&k.t()?)?)?.matmul(v)
    };
    let attended = by_ops(&keys, &keys)?;
    let wide = rand(&[batch, 1, mlp])?;
    let mut cache = candle_nn::kv_cache::KvCache::new(2, 32);
    let ops: Vec<(&str, f64, usize)> = vec![
        (
            "q, k, v dense, one GEMM",
            millis(device, || qkv.forward(&x))?,
            1,
        ),
        ("cross query dense", millis(device, || q.forward(&x))?, 1),
        (
            "dense + residual (self and cross outputs)",
            millis(device, || out.forward_residual(&x, &x))?,
            2,
        ),
        (
            "split q, k, v into heads",
            millis(device, || {
                Ok(split_heads(&projected, 3, heads, 0.125)?.remove(0))
            })?,
            1,
        ),
        (
            "split the cross query",
            millis(device, || Ok(split_heads(&x, 1, heads, 0.125)?.remove(0)))?,
            1,
        ),
        (
            "cache append",
            millis(device, || {
                cache.reset();
                Ok(cache.append(&query, &query)?.0)
            })?,
            1,
        ),
        // The cache's keys and values are views into its buffer: candle's ops.
        (
            "self-attention over 10 tokens",
            millis(device, || by_ops(&keys, &keys))?,
            1,
        ),
        (
            "cross-attention over 577 image tokens (`attend`)",
            millis(device, || attend(&query, &image_k, &image_v, None))?,
            1,
        ),
        (
            "the same by candle's ops",
            millis(device, || by_ops(&image_k, &image_v))?,
            0,
        ),
        ("merge heads", millis(device, || merge_heads(&attended))?, 2),
        ("layer norm", millis(device, || norm.forward(&x))?, 3),
        ("MLP up dense + GELU", millis(device, || up.forward(&x))?, 1),
        (
            "MLP down dense + residual",
            millis(device, || down.forward_residual(&wide, &x))?,
            1,
        ),
    ];
    let lm = millis(device, || lm_head.forward(&x.squeeze(1)?))?;
    let layer: f64 = ops.iter().map(|(_, ms, n)| ms * *n as f64).sum();
    println!("\nOne step of BLIP-large's decoder, {name}, batch {batch}: each op alone");
    println!("| op | ms | per layer |");
    println!("|---|---:|---:|");
    for (op, ms, n) in &ops {
        let per = if *n == 0 {
            "apart".into()
        } else {
            format!("×{n}")
        };
        println!("| {op} | {ms:.4} | {per} |");
    }
    println!("| a layer (sum) | {layer:.3} | |");
    println!("| LM head (GEMM + bias), once per step | {lm:.3} | |");
    println!(
        "| a step: 12 layers + LM head | {:.3} | |",
        12.0 * layer + lm
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    worker::heap::keep_freed_buffers();
    let device = worker::device::parse(&env_or("GPU_DEVICE", "cuda:0"))?;
    let dtypes: Vec<String> = list("GPU_DTYPES", "f32,bf16")?;
    let batches: Vec<usize> = list("GPU_BATCHES", "8,32,64")?;
    let steps: usize = env_or("GPU_STEPS", "20").parse().context("GPU_STEPS")?;
    let min = Duration::from_secs_f64(env_or("GPU_SECONDS", "2").parse().context("GPU_SECONDS")?);
    let mut failed = false;
    for (check, result) in [
        ("attention", attention_check(&device)),
        ("dense", dense_check(&device)),
    ] {
        if let Err(e) = result {
            println!("{check} check failed: {e:#}");
            failed = true;
        }
    }
    println!("\n| implementation | model | dtype | batch | images/s | |");
    println!("|---|---|---|---:|---:|---|");
    for name in list::<String>("GPU_BLIP", "base,large")? {
        if let Err(e) = blip(&device, &name, &dtypes, &batches, steps, min) {
            println!("| ours | blip-{name} | | | failed | {e:#} |");
            failed = true;
        }
    }
    let effnet_batches: Vec<usize> = list("GPU_EFFNET_BATCHES", "8,64,256")?;
    if !effnet_batches.is_empty()
        && let Err(e) = effnet(&device, &effnet_batches, min)
    {
        println!("| ours | efficientnet-lite0 | f32 | | failed | {e:#} |");
        failed = true;
    }
    if let Some(batch) = std::env::var("GPU_LAYER_OPS")
        .ok()
        .and_then(|b| b.parse().ok())
    {
        for name in &dtypes {
            if let Err(e) = layer_ops(&device, dtype(name)?, name, batch) {
                println!("layer ops, {name}: failed: {e:#}");
                failed = true;
            }
        }
    }
    if let Some(batch) = std::env::var("GPU_DECODE_OPS")
        .ok()
        .and_then(|b| b.parse().ok())
    {
        for name in &dtypes {
            if let Err(e) = decode_ops(&device, dtype(name)?, name, batch) {
                println!("decode ops, {name}: failed: {e:#}");
                failed = true;
            }
        }
    }
    anyhow::ensure!(!failed, "some rows failed");
    Ok(())
}
