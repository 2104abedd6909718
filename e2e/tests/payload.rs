//! Payloads end to end, each chosen per pipeline (`submit --payload`): the
//! same video with zstd jobs gives the same bytes in the bucket as with raw
//! ones, and with JPEG jobs embeddings close to raw's; both send fewer bytes
//! through the broker (as the producer's
//! `framefleet_job_bytes_published_total` counts them).

use std::{path::Path, time::Duration};

use e2e::{Fleet, OPENCV_DATA, env, free_addr, http_get, read_npy_f32};

const TASK: &str = "embed.effnet-lite0";
const FRAMES: f64 = 40.0;

/// `framefleet_job_bytes_published_total`, scraped.
fn bytes_published(addr: &str) -> anyhow::Result<f64> {
    Ok(http_get(addr, "/metrics")?
        .lines()
        .filter(|l| l.starts_with("framefleet_job_bytes_published_total"))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum())
}

/// Submits `prefix/vtest.avi` (every 20th frame) with `--payload payload`,
/// waits for it, and returns the pixel bytes per frame it added on the wire.
async fn run(fleet: &Fleet, metrics: &str, prefix: &str, payload: &str) -> anyhow::Result<f64> {
    let before = bytes_published(metrics)?;
    let source = format!("s3://{}/{prefix}/", fleet.bucket);
    fleet.run(
        "producer",
        &[
            "submit",
            &source,
            "--task",
            TASK,
            "--sample",
            "every=20",
            "--payload",
            payload,
        ],
    )?;
    let key = format!("{prefix}/vtest.avi");
    let status = fleet
        .wait_for_status(&[&key], Duration::from_secs(300))
        .await?;
    assert_eq!(status[0]["state"], "done", "{:#}", status[0]);
    assert_eq!(status[0]["frames"], FRAMES as u64, "{:#}", status[0]);
    Ok((bytes_published(metrics)? - before) / FRAMES)
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

#[tokio::test(flavor = "multi_thread")]
async fn payloads_are_chosen_per_pipeline_and_keep_outputs() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("payload").await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    let vtest = Path::new(OPENCV_DATA).join("vtest.avi");
    for prefix in ["raw", "zstd", "jpeg"] {
        fleet.upload(&format!("{prefix}/vtest.avi"), &vtest).await?;
    }
    let metrics = free_addr()?;
    fleet.spawn(
        "producer",
        "producer",
        &["--metrics-addr", &metrics, "run", "--job-frames", "8"],
    )?;
    fleet.spawn("collector", "producer", &["collect"])?;
    fleet.spawn(
        "worker",
        "worker",
        &["--task", TASK, "--device", "cpu", "--model-dir", &model],
    )?;

    let up = tokio::time::Instant::now() + Duration::from_secs(60);
    while http_get(&metrics, "/metrics").is_err() {
        anyhow::ensure!(
            tokio::time::Instant::now() < up,
            "producer metrics never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One at a time, so that the metric's growth belongs to one payload.
    let raw = run(&fleet, &metrics, "raw", "raw").await?;
    let zstd = run(&fleet, &metrics, "zstd", "zstd").await?;
    let jpeg = run(&fleet, &metrics, "jpeg", "jpeg=90").await?;
    assert_eq!(raw, 224.0 * 224.0 * 3.0);
    // Sampled frames far apart share little, so zstd saves little here
    // (BENCHMARKS.md has the figures); JPEG saves most of it.
    assert!(
        zstd < raw,
        "zstd sent {zstd:.0} bytes a frame, raw {raw:.0}"
    );
    assert!(
        jpeg < raw / 5.0,
        "JPEG sent {jpeg:.0} bytes a frame, raw {raw:.0}"
    );

    let mut outputs = std::collections::HashMap::new();
    for prefix in ["raw", "zstd", "jpeg"] {
        for ext in ["npy", "frames.json"] {
            let key = format!("outputs/embeddings/{prefix}/vtest.avi.{ext}");
            let bytes = fleet.get(&key).await?;
            outputs.insert(
                (prefix, ext),
                bytes.ok_or_else(|| anyhow::anyhow!("{key} missing"))?,
            );
        }
    }
    for ext in ["npy", "frames.json"] {
        assert!(
            outputs[&("raw", ext)] == outputs[&("zstd", ext)],
            "{ext}: raw and zstd outputs differ"
        );
    }
    let (rows, dim, exact) = read_npy_f32(&outputs[&("raw", "npy")])?;
    let (jpeg_rows, _, lossy) = read_npy_f32(&outputs[&("jpeg", "npy")])?;
    assert_eq!((rows, jpeg_rows), (40, 40));
    let worst = exact
        .chunks_exact(dim)
        .zip(lossy.chunks_exact(dim))
        .map(|(a, b)| cosine(a, b))
        .fold(f64::INFINITY, f64::min);
    assert!(worst > 0.95, "JPEG embeddings' cosine to raw's: {worst}");
    assert!(
        worst < 1.0 - 1e-9,
        "JPEG made no difference at all: {worst}"
    );
    fleet.cleanup(&[TASK]).await
}
