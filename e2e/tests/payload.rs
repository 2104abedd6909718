//! zstd payloads are lossless end to end: the same video through a producer
//! packing its jobs with zstd gives the same bytes in the bucket as through
//! one sending raw RGB, with fewer bytes on the broker (as the producer's
//! `framefleet_job_bytes_published_total` counts them).

use std::{path::Path, time::Duration};

use e2e::{Fleet, OPENCV_DATA, env, free_addr, http_get};

const TASK: &str = "embed.effnet-lite0";

/// `framefleet_job_bytes_published_total` and frames published, scraped.
fn published(addr: &str) -> anyhow::Result<(f64, f64)> {
    let text = http_get(addr, "/metrics")?;
    let value = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum::<f64>()
    };
    Ok((
        value("framefleet_job_bytes_published_total"),
        value("framefleet_frames_published_total"),
    ))
}

/// Runs `prefix/vtest.avi` (every 20th frame) through a producer started
/// with `--payload payload`; returns its pixel bytes per frame published.
async fn run_with(fleet: &mut Fleet, prefix: &str, payload: &str) -> anyhow::Result<f64> {
    let addr = free_addr()?;
    fleet.spawn(
        prefix,
        "producer",
        &[
            "--metrics-addr",
            &addr,
            "run",
            "--job-frames",
            "8",
            "--payload",
            payload,
        ],
    )?;
    let bucket = fleet.bucket.clone();
    let source = format!("s3://{bucket}/{prefix}/");
    fleet.run(
        "producer",
        &["submit", &source, "--task", TASK, "--sample", "every=20"],
    )?;
    let key = format!("{prefix}/vtest.avi");
    let status = fleet
        .wait_for_status(&[&key], Duration::from_secs(300))
        .await?;
    assert_eq!(status[0]["state"], "done", "{:#}", status[0]);
    let (bytes, frames) = published(&addr)?;
    assert_eq!(frames, 40.0, "{prefix}: frames published");
    fleet.terminate(prefix, Duration::from_secs(30)).await?;
    Ok(bytes / frames)
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_jobs_give_the_same_outputs_as_raw_ones() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("payload").await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    let vtest = Path::new(OPENCV_DATA).join("vtest.avi");
    fleet.upload("raw/vtest.avi", &vtest).await?;
    fleet.upload("zstd/vtest.avi", &vtest).await?;
    fleet.spawn("collector", "producer", &["collect"])?;
    fleet.spawn(
        "worker",
        "worker",
        &["--task", TASK, "--device", "cpu", "--model-dir", &model],
    )?;

    // One producer at a time, so that each video meets the payload meant
    // for it.
    let raw = run_with(&mut fleet, "raw", "raw").await?;
    let zstd = run_with(&mut fleet, "zstd", &format!("raw,{TASK}=zstd")).await?;
    assert_eq!(raw, 224.0 * 224.0 * 3.0);
    // Sampled frames far apart share little, so zstd saves little here
    // (BENCHMARKS.md has the figures); it must still save something.
    assert!(
        zstd < raw,
        "zstd sent {zstd:.0} bytes per frame against raw's {raw:.0}"
    );

    for output in ["npy", "frames.json"] {
        let raw = fleet
            .get(&format!("outputs/embeddings/raw/vtest.avi.{output}"))
            .await?;
        let zstd = fleet
            .get(&format!("outputs/embeddings/zstd/vtest.avi.{output}"))
            .await?;
        assert!(raw.is_some(), "{output} written");
        assert!(raw == zstd, "{output}: raw and zstd outputs differ");
    }
    fleet.cleanup(&[TASK]).await
}
