//! What each frame payload does to the models' outputs: the same frames
//! (opencv-doc's vtest.avi, every 20th of its 795, resized by the ffmpeg
//! CLI) packed and unpacked as the producer and the worker do, against the
//! raw frames. EfficientNet-Lite0 (real weights, `FF_MODEL_DIR`): cosine
//! similarity of each frame's embedding to raw's. BLIP (the tiny random
//! fixture, greedy, 20 tokens): the share of caption tokens equal to raw's
//! at the same position, and of captions equal whole. Bytes per frame
//! beside. Run: `cargo bench --profile dev --workspace --bench payload`.

use std::{path::Path, process::Command};

use candle_core::{DType, Device};
use schema::{Frame, FrameJob, ObjectRef, Payload};
use worker::models::{
    EffnetEncoder, Images, Model,
    blip::{Captioner, Limits},
};

const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";
const PAYLOADS: [Payload; 4] = [
    Payload::Zstd,
    Payload::Jpeg(95),
    Payload::Jpeg(90),
    Payload::Jpeg(75),
];

/// vtest's every 20th frame at `side`², packed RGB24, by the ffmpeg CLI.
fn frames(side: usize) -> anyhow::Result<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i", VTEST])
        .args([
            "-vf",
            &format!("select=not(mod(n\\,20)),scale={side}:{side}:flags=bicubic"),
        ])
        .args([
            "-fps_mode",
            "passthrough",
            "-pix_fmt",
            "rgb24",
            "-f",
            "rawvideo",
            "-",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// The frames after a trip through `payload`, and bytes per frame sent.
fn through(payload: Payload, raw: &[u8], side: usize) -> anyhow::Result<(Vec<u8>, f64)> {
    let count = raw.len() / (side * side * 3);
    let packed = fleet::payload::pack(payload, raw.to_vec(), side as u32, side as u32)?;
    let sent = packed.bytes.len() as f64 / count as f64;
    let object = ObjectRef {
        bucket: "b".into(),
        key: "vtest.avi".into(),
    };
    let mut job = FrameJob {
        video_id: uuid::Uuid::nil(),
        task: "bench".into(),
        source: object.clone(),
        output: object,
        seq: 0,
        width: side as u32,
        height: side as u32,
        frames: (0..count as u64)
            .map(|index| Frame {
                index,
                pts_s: index as f64,
            })
            .collect(),
        payload,
        pixels: packed.bytes,
        frame_bytes: packed.frame_bytes,
    };
    fleet::payload::unpack(&mut job)?;
    Ok((job.pixels, sent))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::var("FF_MODEL_DIR")
        .map_err(|_| anyhow::anyhow!("set FF_MODEL_DIR (scripts/setup.sh does)"))?;
    let effnet = EffnetEncoder::load(Path::new(&dir), &Device::Cpu)?;
    let side = effnet.input_size().0;
    let raw = frames(side)?;
    let count = raw.len() / (side * side * 3);
    let embed = |pixels: &[u8]| {
        effnet.infer(Images {
            pixels,
            count,
            width: side,
            height: side,
        })
    };
    let exact = embed(&raw)?;

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/blip-tiny");
    let limits = Limits {
        max_tokens: 20,
        min_tokens: 20,
    };
    let blip = Captioner::load("blip-tiny", &fixture, &Device::Cpu, "", limits, DType::F32)?;
    let blip_side = blip.image_size();
    let blip_raw = frames(blip_side)?;
    let caption = |pixels: &[u8]| {
        blip.caption(Images {
            pixels,
            count,
            width: blip_side,
            height: blip_side,
        })
    };
    let captions = caption(&blip_raw)?;

    println!(
        "{count} frames of vtest.avi; raw is {} bytes a frame at {side}²",
        side * side * 3
    );
    println!(
        "| payload | bytes/frame at {side}² | raw / payload | EfficientNet cosine to raw, mean | min | BLIP-tiny tokens equal | captions equal |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for payload in PAYLOADS {
        let (pixels, sent) = through(payload, &raw, side)?;
        let lossy = embed(&pixels)?;
        let cosines: Vec<f64> = exact
            .embeddings
            .chunks_exact(exact.dim)
            .zip(lossy.embeddings.chunks_exact(lossy.dim))
            .map(|(a, b)| cosine(a, b))
            .collect();
        let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
        let min = cosines.iter().copied().fold(f64::INFINITY, f64::min);
        let (blip_pixels, _) = through(payload, &blip_raw, blip_side)?;
        let got = caption(&blip_pixels)?;
        let (mut same, mut total, mut whole) = (0, 0, 0);
        for (a, b) in captions.iter().zip(&got) {
            same += a
                .token_ids
                .iter()
                .zip(&b.token_ids)
                .filter(|(x, y)| x == y)
                .count();
            total += a.token_ids.len().max(b.token_ids.len());
            whole += usize::from(a.token_ids == b.token_ids);
        }
        println!(
            "| {payload:?} | {sent:.0} | {:.2}x | {mean:.5} | {min:.5} | {:.1}% | {whole}/{count} |",
            (side * side * 3) as f64 / sent,
            100.0 * same as f64 / total.max(1) as f64
        );
    }
    Ok(())
}
