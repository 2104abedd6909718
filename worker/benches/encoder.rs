//! EfficientNet-Lite0 on CPU beside ONNX Runtime, side by side in one run:
//! images/s at several batch sizes for our encoder, then for ONNX Runtime
//! on the same weights in its own process (scripts/bench_effnet_ort.py,
//! when the reference env is there), alternated over a few rounds and
//! each ratio taken within a round, both computing what the worker
//! reports per image (the embedding, and the classifier's top 5), with
//! the ratio and the largest difference between the two embeddings of the
//! first image; our
//! depthwise kernel on each kind of the model's depthwise layers, and
//! against candle's grouped convolution on the widest; our packed GEMM (bias and ReLU6 included)
//! against candle's matmul alone on the model's 1×1 convolutions at batch
//! 8 and on ViT-B's MLP, and as a share of the threads' measured
//! multiply-add peak, and with bf16 products (`--dtype bf16` on the CPU), the classifier at batch 1 with its weights out of
//! cache, and each kind of inverted-residual block fused
//! (`kernels/mbconv.rs`) against its three layers run one after another,
//! at batch 8 and 1. Needs the converted model (`FF_MODEL_DIR`, set
//! by scripts/setup.sh). Run: `scripts/bench.sh`.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use candle_core::{Device, Module, Tensor};
use multiversion::{multiversion, target::target_cfg_f};
use worker::models::{
    EffnetEncoder, Images, Model,
    kernels::{
        depthwise,
        gemm::{self, Epilogue, Packed},
        in_pool,
        linear::{Activation, Linear},
        mbconv::InvertedResidual,
    },
};

const BATCHES: [usize; 3] = [1, 8, 32];
/// Rounds of ours, then ONNX Runtime, alternated: these VMs' speed drifts
/// by up to a third within a session (and ONNX Runtime at batch 1 read
/// 104 and 173 images/s on one VM in runs minutes apart), so each ratio
/// pairs figures taken within seconds of each other.
const ROUNDS: usize = 3;
/// Seconds each side runs each batch size per round.
const SECONDS: u64 = 1;

/// The median, or `None` for no values.
fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn time<T>(min: Duration, mut f: impl FnMut() -> T) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    let mut runs = 0;
    while start.elapsed() < min || runs < 3 {
        std::hint::black_box(f());
        runs += 1;
    }
    start.elapsed().as_secs_f64() / runs as f64
}

/// Median seconds of `f` over 50 calls, each after `junk` is written
/// through, so that what `f` reads comes from memory.
fn cold(
    junk: &mut [u8],
    mut f: impl FnMut() -> candle_core::Result<()>,
) -> candle_core::Result<f64> {
    let mut secs = Vec::with_capacity(50);
    for round in 0..50u8 {
        junk.iter_mut()
            .step_by(64)
            .for_each(|b| *b = b.wrapping_add(round));
        let start = Instant::now();
        f()?;
        secs.push(start.elapsed().as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    Ok(secs[secs.len() / 2])
}

/// ONNX Runtime's images/s per batch, run by the reference env's Python,
/// which also compares its embedding of the first image with `ours`.
/// ONNX Runtime's images/s per batch size, `SECONDS` each. With `ours`
/// (our first image's embedding), it prints the largest difference too.
fn onnx_runtime(dir: &str, ours: Option<&[f32]>) -> anyhow::Result<BTreeMap<usize, f64>> {
    let python = std::env::var("FF_REF_PYTHON")
        .map_err(|_| anyhow::anyhow!("FF_REF_PYTHON is not set (scripts/bench.sh sets it)"))?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/bench_effnet_ort.py"
    );
    let batches = BATCHES.map(|b| b.to_string()).join(",");
    let mut command = Command::new(python);
    command
        .args([script, dir])
        .env("EFFNET_BATCHES", batches)
        .env("EFFNET_SECONDS", SECONDS.to_string())
        .env("EFFNET_THREADS", rayon::current_num_threads().to_string());
    let first = std::env::temp_dir().join(format!("ff-effnet-ours-{}.f32", std::process::id()));
    if let Some(ours) = ours {
        let bytes = ours
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>();
        std::fs::write(&first, bytes)?;
        command.env("EFFNET_OURS", &first);
    }
    let out = command.output()?;
    std::fs::remove_file(&first).ok();
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rates = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        match cells.as_slice() {
            ["", name, batch, _, ips, ""] if name.starts_with("ONNX Runtime") => {
                rates.insert(batch.parse()?, ips.parse()?);
            }
            _ => println!("{line}"),
        }
    }
    Ok(rates)
}

/// `steps` rounds of independent multiply-adds on `R` vector registers of
/// `L` lanes (12 with AVX-512, 10 with AVX2: more sums in flight than two
/// FMA pipes of four cycles need), so that nothing but the FMA units
/// bounds it: this core's peak, which the GEMM table is measured against.
/// Returns the sums (to be kept) and the multiply-adds per step.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn fma_chains(steps: usize, seed: f32) -> (f32, usize) {
    macro_rules! chains {
        ($r:literal, $l:literal) => {{
            let mut acc = [[seed; $l]; $r];
            for _ in 0..steps {
                for v in acc.as_flattened_mut() {
                    *v = v.mul_add(0.999_999, 1e-7);
                }
            }
            (acc.as_flattened().iter().sum(), $r * $l)
        }};
    }
    if target_cfg_f!(target_feature = "avx512f") {
        chains!(12, 16)
    } else {
        chains!(10, 8)
    }
}

/// GFLOP/s of `fma_chains` on every thread of the pool at once.
fn fma_peak() -> f64 {
    let steps = 20_000_000;
    let mut per_step = 0;
    let secs = time(Duration::from_secs(1), || {
        let runs = rayon::broadcast(|ctx| fma_chains(steps, ctx.index() as f32));
        per_step = runs.iter().map(|&(_, fmas)| fmas).sum();
        runs
    });
    2.0 * (per_step * steps) as f64 / secs / 1e9
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::var("FF_MODEL_DIR")
        .map_err(|_| anyhow::anyhow!("set FF_MODEL_DIR (scripts/setup.sh does)"))?;
    let encoder = EffnetEncoder::load(std::path::Path::new(&dir), &Device::Cpu)?;
    let (w, h) = encoder.input_size();
    let threads = rayon::current_num_threads();
    // The pattern bench_effnet_ort.py feeds ONNX Runtime.
    let biggest = BATCHES[BATCHES.len() - 1];
    let pixels: Vec<u8> = (0..biggest * w * h * 3)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let images = |count| Images {
        pixels: &pixels[..count * w * h * 3],
        count,
        width: w,
        height: h,
    };
    // First with glibc's allocator thresholds as shipped, then as the
    // worker sets them.
    let shipped = time(Duration::from_secs(3), || {
        encoder.infer(images(8)).map(|e| e.dim)
    });
    worker::heap::keep_freed_buffers();
    let first = encoder.infer(images(1))?.embeddings;
    // Per batch size: (ours, ONNX Runtime's) images/s of each round.
    let mut rounds: BTreeMap<usize, Vec<(f64, Option<f64>)>> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut ours = Vec::new();
        for batch in BATCHES {
            let secs = time(Duration::from_secs(SECONDS), || {
                encoder.infer(images(batch)).map(|e| e.dim)
            });
            ours.push((batch, batch as f64 / secs));
        }
        let theirs = onnx_runtime(&dir, (round == 0).then_some(first.as_slice()))
            .map_err(|e| eprintln!("ONNX Runtime not run: {e:#}"))
            .unwrap_or_default();
        for (batch, ips) in ours {
            rounds
                .entry(batch)
                .or_default()
                .push((ips, theirs.get(&batch).copied()));
        }
    }
    println!(
        "EfficientNet-Lite0, 224², {threads} threads; {ROUNDS} rounds of ours then ONNX Runtime, {SECONDS} s each"
    );
    println!(
        "| batch | ours images/s | ONNX Runtime images/s | ours / ONNX Runtime, each round | median |"
    );
    println!("|---:|---:|---:|---|---:|");
    for (batch, pairs) in &rounds {
        let ours = median(pairs.iter().map(|p| p.0));
        let theirs = median(pairs.iter().filter_map(|p| p.1));
        let ratios: Vec<f64> = pairs.iter().filter_map(|p| Some(p.0 / p.1?)).collect();
        let each = ratios
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(", ");
        let ips = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
        let ratio = median(ratios.iter().copied()).map_or("-".into(), |r| format!("{r:.2}x"));
        println!(
            "| {batch} | {} | {} | {each} | {ratio} |",
            ips(ours),
            ips(theirs)
        );
    }

    if let Some(ours) = rounds.get(&8).and_then(|p| median(p.iter().map(|p| p.0))) {
        println!(
            "batch 8 with glibc's allocator thresholds as shipped: {:.1} images/s; as the worker sets them (`heap::keep_freed_buffers`, median of the rounds): {ours:.1} ({:.2}x)",
            8.0 / shipped,
            ours * shipped / 8.0
        );
    }

    println!();
    println!(
        "| depthwise (NHWC, + bias, ReLU6): batch x size² x channels, kernel, stride | ours ms | ours GFLOP/s |"
    );
    println!("|---|---:|---:|");
    for (size, c, k, s) in [
        (112, 32, 3, 1),
        (112, 96, 3, 2),
        (56, 144, 3, 1),
        (28, 240, 5, 1),
        (14, 672, 5, 1),
        (7, 1152, 5, 1),
    ] {
        let x = Tensor::randn(0f32, 1.0, (8, size, size, c), &Device::Cpu)?;
        let kernel = Tensor::randn(0f32, 1.0, (k, k, c), &Device::Cpu)?;
        let bias = Tensor::zeros(c, candle_core::DType::F32, &Device::Cpu)?;
        let secs = time(Duration::from_secs(1), || {
            depthwise::depthwise_nhwc(&x, &kernel, &bias, s, true)
        });
        let out = size.div_ceil(s);
        let flops = 2.0 * (8 * out * out * c * k * k) as f64;
        println!(
            "| 8 x {size}² x {c}, {k}x{k}, {s} | {:.2} | {:.1} |",
            secs * 1e3,
            flops / secs / 1e9
        );
    }
    let x = Tensor::randn(0f32, 1.0, (8, 7, 7, 1152), &Device::Cpu)?;
    let k = Tensor::randn(0f32, 1.0, (5, 5, 1152), &Device::Cpu)?;
    let bias = Tensor::zeros(1152, candle_core::DType::F32, &Device::Cpu)?;
    let ours = time(Duration::from_secs(2), || {
        depthwise::depthwise_nhwc(&x, &k, &bias, 1, false)
    });
    let nchw = x
        .permute((0, 3, 1, 2))?
        .pad_with_zeros(2, 2, 2)?
        .pad_with_zeros(3, 2, 2)?
        .contiguous()?;
    let kernel = k.permute((2, 0, 1))?.unsqueeze(1)?.contiguous()?;
    let candle = time(Duration::from_secs(2), || {
        nchw.conv2d(&kernel, 0, 1, 1, 1152)
    });
    println!();
    println!("| depthwise 5x5, 8 x 7 x 7 x 1152 | ms |");
    println!("|---|---:|");
    println!("| ours (NHWC, bias and ReLU6 fused) | {:.2} |", ours * 1e3);
    println!(
        "| candle conv2d, groups = 1152 (NCHW) | {:.2} ({:.0}x slower) |",
        candle * 1e3,
        candle / ours
    );

    let peak = fma_peak();
    println!();
    println!("Multiply-add peak, independent FMAs on {threads} threads: {peak:.1} GFLOP/s");
    println!();
    // bf16 products on every kernel this CPU has (AMX tiles, `vdpbf16ps`,
    // widened to f32), the first being the one the worker runs.
    let kernels = gemm::bf16_kernels();
    print!(
        "| GEMM rows x in -> out | ours (packed, + bias, ReLU6) GFLOP/s | ours / peak | candle matmul GFLOP/s | ours / candle |"
    );
    for kernel in kernels {
        print!(" bf16 products, {kernel:?}, GFLOP/s | / f32 |");
    }
    println!();
    println!(
        "|---|---:|---:|---:|---:|{}",
        "---:|---:|".repeat(kernels.len())
    );
    for (m, k, n, what) in [
        (8 * 112 * 112, 32, 16, "block 0 project, batch 8"),
        (8 * 56 * 56, 24, 144, "stage 2 expand"),
        (8 * 56 * 56, 144, 24, "stage 2 project"),
        (8 * 28 * 28, 240, 40, "stage 3 project"),
        (8 * 14 * 14, 480, 80, "stage 4 project"),
        (8 * 7 * 7, 1152, 192, "stage 6 project"),
        (8 * 7 * 7, 320, 1280, "head"),
        (7 * 7, 320, 1280, "head, batch 1"),
        (8 * 197, 768, 3072, "ViT-B MLP up, batch 8"),
        (8 * 197, 3072, 768, "ViT-B MLP down"),
        (8 * 577, 768, 2304, "BLIP-base q, k, v, batch 8"),
        (8, 768, 30524, "BLIP-base vocabulary, a step at batch 8"),
        (577, 64, 577, "BLIP attention, one head's q·kᵀ"),
        (577, 577, 64, "BLIP attention, one head's scores · v"),
    ] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 0.1, (n, k), &Device::Cpu)?;
        let b = vec![0.1f32; n];
        let packed = Packed::new(&w.flatten_all()?.to_vec1()?, &b, n, k);
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ours = time(Duration::from_secs(1), || {
            packed.forward(&xs, m, Epilogue::Relu6)
        });
        let wt = w.t()?;
        let candle = time(Duration::from_secs(1), || x.matmul(&wt));
        let gflops = |secs: f64| 2.0 * (m * k * n) as f64 / secs / 1e9;
        print!(
            "| {m} x {k} -> {n} ({what}) | {:.1} | {:.0} % | {:.1} | {:.2}x |",
            gflops(ours),
            100.0 * gflops(ours) / peak,
            gflops(candle),
            candle / ours,
        );
        let weights = w.flatten_all()?.to_vec1()?;
        for &kernel in kernels {
            let bf16 = Packed::with_bf16_kernel(&weights, &b, n, k, kernel);
            let bf16 = time(Duration::from_secs(1), || {
                bf16.forward(&xs, m, Epilogue::Relu6)
            });
            print!(" {:.1} | {:.2}x |", gflops(bf16), ours / bf16);
        }
        println!();
    }

    // At batch 1 every image reads all the network's weights, and the
    // classifier's 5 MB come from memory, not cache: a 64 MiB buffer is
    // written between calls, outside the timing.
    let (k, n) = (1280, 1000);
    let x = Tensor::randn(0f32, 1.0, (1, k), &Device::Cpu)?;
    let w = Tensor::randn(0f32, 0.1, (n, k), &Device::Cpu)?;
    let packed = Packed::new(&w.flatten_all()?.to_vec1()?, &vec![0.1f32; n], n, k);
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let wt = w.t()?;
    let mut junk = vec![0u8; 64 << 20];
    let (ours, candle) = in_pool(|| -> candle_core::Result<(f64, f64)> {
        let ours = cold(&mut junk, || {
            std::hint::black_box(packed.forward(&xs, 1, Epilogue::Identity));
            Ok(())
        })?;
        let candle = cold(&mut junk, || x.matmul(&wt).map(|_| ()))?;
        Ok((ours, candle))
    })?;
    println!();
    println!(
        "| classifier at batch 1, weights out of cache: 1 x 1280 -> 1000 | µs (median of 50) |"
    );
    println!("|---|---:|");
    println!("| ours (packed, + bias) | {:.0} |", ours * 1e6);
    println!(
        "| candle matmul | {:.0} ({:.2}x ours) |",
        candle * 1e6,
        candle / ours
    );

    println!();
    println!(
        "| block: batch x size² x in, expand, out, kernel, stride | fused ms | layer by layer ms | fused speed-up | tasks take |"
    );
    println!("|---|---:|---:|---:|---|");
    for batch in [8, 1] {
        for (size, cin, expand, cout, k, s) in [
            (112, 32, 1, 16, 3, 1),
            (112, 16, 6, 24, 3, 2),
            (56, 24, 6, 24, 3, 1),
            (56, 24, 6, 40, 5, 2),
            (28, 40, 6, 40, 5, 1),
            (14, 80, 6, 80, 3, 1),
            (7, 192, 6, 192, 5, 1),
        ] {
            let (fused, layers, by_rows) = block_times(batch, size, cin, expand, cout, k, s)?;
            println!(
                "| {batch} x {size}² x {cin}, {expand}, {cout}, {k}x{k}, {s} | {:.2} | {:.2} | {:.2}x | {} |",
                fused * 1e3,
                layers * 1e3,
                layers / fused,
                if by_rows { "rows" } else { "channels" }
            );
        }
    }
    Ok(())
}

/// One inverted-residual block on random weights: seconds per call fused,
/// and as the expand, depthwise and project layers one after another; and
/// whether the fused block's tasks take rows (else channels).
fn block_times(
    batch: usize,
    size: usize,
    cin: usize,
    expand: usize,
    cout: usize,
    k: usize,
    s: usize,
) -> anyhow::Result<(f64, f64, bool)> {
    let dev = Device::Cpu;
    let mid = cin * expand;
    let x = Tensor::randn(0f32, 1.0, (batch, size, size, cin), &dev)?;
    let weights = |n, k| Tensor::randn(0f32, 0.3, (n, k), &dev);
    let (ew, eb) = (
        weights(mid, cin)?,
        Tensor::zeros(mid, candle_core::DType::F32, &dev)?,
    );
    let (dw, db) = (
        Tensor::randn(0f32, 0.3, (k, k, mid), &dev)?,
        Tensor::zeros(mid, candle_core::DType::F32, &dev)?,
    );
    let (pw, pb) = (
        weights(cout, mid)?,
        Tensor::zeros(cout, candle_core::DType::F32, &dev)?,
    );
    let expand_layer = (expand != 1)
        .then(|| Linear::new(ew, eb, Activation::Relu6))
        .transpose()?;
    let project = Linear::new(pw, pb, Activation::Identity)?;
    let residual = s == 1 && cin == cout;
    let packed = |l: &Linear| l.packed().cloned();
    let block = InvertedResidual {
        expand: expand_layer.as_ref().and_then(packed),
        depthwise: dw.flatten_all()?.to_vec1()?,
        depthwise_bias: db.to_vec1()?,
        kernel: k,
        stride: s,
        project: packed(&project).ok_or_else(|| anyhow::anyhow!("not packed"))?,
        residual,
    };
    // In the pool, as the model runs them: from outside it each layer
    // would also pay for parking and waking this thread.
    let (fused, layers) = in_pool(|| {
        let fused = time(Duration::from_secs(1), || x.apply_op1_no_bwd(&block));
        let layers = time(Duration::from_secs(1), || -> candle_core::Result<Tensor> {
            let h = match &expand_layer {
                Some(e) => e.forward(&x)?,
                None => x.clone(),
            };
            let h = depthwise::depthwise_nhwc(&h, &dw, &db, s, true)?;
            let y = project.forward(&h)?;
            if residual { y + &x } else { Ok(y) }
        });
        (fused, layers)
    });
    Ok((fused, layers, block.by_rows(batch, size, size, true)))
}
