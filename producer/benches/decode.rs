//! The producer's decode path (demux, decode, sample, swscale to 224² RGB24,
//! pack) without a broker, beside the ffmpeg CLI doing the same on the same
//! files, in one run: each pair is timed back to back, `RUNS` times, and
//! the ratio is the median of the pairs' (ffmpeg seconds / ours), so > 1
//! means ours is faster. Single-threaded decoding is compared with
//! `ffmpeg -threads 1`, libavcodec's automatic threading with ffmpeg's
//! default.
//!
//!     cargo bench --profile dev --workspace --bench decode
//!
//! Clips: opencv-doc's vtest.avi as it is (768×576 MPEG-4 Part 2), and its
//! first 300 frames scaled to 270p, 720p and 1080p H.264 (libx264 medium,
//! CRF 23), made once into the system temp dir. Env: DECODE_RUNS (5),
//! DECODE_CLIPS (vtest,270p,720p,1080p).
//!
//! A second table times the sparse sampling modes on one thread against
//! decoding every frame: `fps=1` with the decoder decoding every frame and
//! with it skipping unreferenced frames between instants, `keyframes`, and
//! `scene`.
//!
//! A third table packs the frames as `--payload zstd` and `--payload
//! jpeg=Q` would, in the jobs the producer makes (32 frames), and gives
//! bytes per frame against raw RGB and the packing time per frame (which
//! includes one copy of the raw bytes), for every frame and for `fps=1`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use producer::decode::{self, Settings};
use schema::{Fit, Payload, Sampling};

const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";
const SIDE: u32 = 224;

fn ffmpeg(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The clip's file, made on first use.
fn clip(name: &str) -> anyhow::Result<PathBuf> {
    let height = match name {
        "vtest" => return Ok(PathBuf::from(VTEST)),
        "270p" => 270,
        "720p" => 720,
        "1080p" => 1080,
        other => anyhow::bail!("no clip {other:?}: vtest, 270p, 720p or 1080p"),
    };
    let path = std::env::temp_dir().join(format!("ff-bench-decode-{name}.mp4"));
    if !path.exists() {
        eprintln!("making {}", path.display());
        let partial = path.with_extension("part.mp4");
        ffmpeg(&[
            "-i",
            VTEST,
            "-frames:v",
            "300",
            "-vf",
            &format!("scale=-2:{height}"),
            "-c:v",
            "libx264",
            "-crf",
            "23",
            "-pix_fmt",
            "yuv420p",
            &partial.to_string_lossy(),
        ])?;
        std::fs::rename(&partial, &path)?;
    }
    Ok(path)
}

fn ours(path: &Path, threads: usize) -> anyhow::Result<(f64, u64)> {
    let (seconds, bytes, _) = sampled(path, threads, Sampling::All, true)?;
    Ok((seconds, bytes))
}

/// Seconds, bytes of pixels kept, and frames the decoder returned.
fn sampled(
    path: &Path,
    threads: usize,
    sampling: Sampling,
    skip_unsampled: bool,
) -> anyhow::Result<(f64, u64, u64)> {
    let settings = Settings {
        width: SIDE,
        height: SIDE,
        fit: Fit::Stretch,
        sampling,
        job_frames: 32,
        job_bytes: 8 << 20,
        threads,
        ca_file: None,
        skip_unsampled,
    };
    let started = Instant::now();
    let mut bytes = 0u64;
    let summary = decode::decode(&path.to_string_lossy(), &settings, |batch| {
        bytes += batch.pixels.len() as u64;
        true
    })?;
    Ok((started.elapsed().as_secs_f64(), bytes, summary.decoded))
}

/// Payloads: bytes per frame and packing cost, in jobs as the producer
/// makes them.
fn payloads(clips: &str) -> anyhow::Result<()> {
    let kinds = [
        Payload::Zstd,
        Payload::Jpeg(95),
        Payload::Jpeg(90),
        Payload::Jpeg(75),
    ];
    println!();
    println!(
        "payloads, jobs of 32 frames, packed on one thread (raw: {} bytes a frame)",
        SIDE * SIDE * 3
    );
    println!("| clip | sampling | payload | frames | bytes/frame | raw / packed | pack ms/frame |");
    println!("|---|---|---|---:|---:|---:|---:|");
    for name in clips.split(',') {
        let path = clip(name)?;
        for (label, sampling) in [("all", Sampling::All), ("fps=1", Sampling::Fps(1.0))] {
            let settings = Settings {
                width: SIDE,
                height: SIDE,
                fit: Fit::Stretch,
                sampling,
                job_frames: 32,
                job_bytes: 8 << 20,
                threads: 0,
                ca_file: None,
                skip_unsampled: true,
            };
            let mut batches = Vec::new();
            decode::decode(&path.to_string_lossy(), &settings, |batch| {
                batches.push(batch.pixels);
                true
            })?;
            let raw: usize = batches.iter().map(Vec::len).sum();
            let frames = (raw / (SIDE * SIDE * 3) as usize).max(1) as f64;
            for kind in kinds {
                let started = Instant::now();
                let mut packed = 0;
                for pixels in &batches {
                    packed += fleet::payload::pack(kind, pixels.clone(), SIDE, SIDE)?
                        .bytes
                        .len();
                }
                let seconds = started.elapsed().as_secs_f64();
                println!(
                    "| {name} | {label} | {kind:?} | {frames} | {:.0} | {:.2}x | {:.2} |",
                    packed as f64 / frames,
                    raw as f64 / packed.max(1) as f64,
                    seconds * 1e3 / frames
                );
            }
        }
    }
    Ok(())
}

/// The sparse modes on one thread, each timed after an every-frame decode
/// of the same clip; the speed-up is the median of those pairs' ratios.
fn sparse(clips: &str, runs: usize) -> anyhow::Result<()> {
    let modes = [
        ("fps=1, every frame decoded", Sampling::Fps(1.0), false),
        (
            "fps=1, unreferenced frames skipped",
            Sampling::Fps(1.0),
            true,
        ),
        ("keyframes", Sampling::Keyframes, true),
        ("scene (0.4)", Sampling::Scene(0.4), true),
    ];
    println!();
    println!(
        "sparse sampling, 1 thread, {runs} runs per pair, against decoding and keeping every frame"
    );
    println!("| clip | mode | frames kept | frames decoded | s | every frame s | speed-up |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for name in clips.split(',') {
        let path = clip(name)?;
        for (label, sampling, skip) in modes {
            let (mut us, mut all, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            let (mut kept, mut decoded) = (0, 0);
            for _ in 0..runs {
                let (base, ..) = sampled(&path, 1, Sampling::All, true)?;
                let (seconds, bytes, frames) = sampled(&path, 1, sampling, skip)?;
                (kept, decoded) = (bytes / u64::from(SIDE * SIDE * 3), frames);
                us.push(seconds);
                all.push(base);
                ratios.push(base / seconds);
            }
            println!(
                "| {name} | {label} | {kept} | {decoded} | {:.3} | {:.3} | {:.1}x |",
                median(us),
                median(all),
                median(ratios)
            );
        }
    }
    Ok(())
}

fn cli(path: &Path, threads: Option<usize>) -> anyhow::Result<(f64, u64)> {
    let mut args = Vec::new();
    if let Some(n) = threads {
        args.extend(["-threads".to_owned(), n.to_string()]);
    }
    let scale = format!("scale={SIDE}:{SIDE}:flags=bicubic");
    args.extend(
        [
            "-i",
            &path.to_string_lossy(),
            "-vf",
            &scale,
            "-pix_fmt",
            "rgb24",
            "-f",
            "rawvideo",
            "-",
        ]
        .map(str::to_owned),
    );
    let started = Instant::now();
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(&args)
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(out.status.success(), "ffmpeg {args:?} failed");
    Ok((seconds, out.stdout.len() as u64))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    decode::init()?;
    let runs: usize = std::env::var("DECODE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let clips = std::env::var("DECODE_CLIPS").unwrap_or_else(|_| "vtest,270p,720p,1080p".into());
    println!(
        "decode + resize to {SIDE}² RGB24, every frame, {runs} runs per pair, {} cores",
        std::thread::available_parallelism()?
    );
    println!("| clip | threads | ours s | ffmpeg CLI s | ffmpeg / ours (median of pairs) |");
    println!("|---|---|---:|---:|---:|");
    for name in clips.split(',') {
        let path = clip(name)?;
        for (label, threads, cli_threads) in
            [("1 / -threads 1", 1, Some(1)), ("auto / default", 0, None)]
        {
            let (mut us, mut them, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                let (a, a_bytes) = ours(&path, threads)?;
                let (b, b_bytes) = cli(&path, cli_threads)?;
                anyhow::ensure!(
                    a_bytes == b_bytes,
                    "{name}: ours produced {a_bytes} bytes, ffmpeg {b_bytes}"
                );
                us.push(a);
                them.push(b);
                ratios.push(b / a);
            }
            println!(
                "| {name} | {label} | {:.3} | {:.3} | {:.2}x |",
                median(us),
                median(them),
                median(ratios)
            );
        }
    }
    sparse(&clips, runs)?;
    payloads(&clips)
}
