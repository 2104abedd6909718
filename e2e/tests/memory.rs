//! Bounded memory, measured: peak RSS (VmHWM) of producer, worker and
//! collector must not grow with a video's length or with the number of
//! queued videos. Too slow for CI (a 2-hour video); `scripts/memory.sh`
//! runs these and RELIABILITY.md holds the figures.

use std::{path::Path, time::Duration};

use e2e::{Fleet, env, ffmpeg};

const TASK: &str = "embed.effnet-lite0";
const PROCESSES: [&str; 3] = ["producer", "worker", "collector"];

async fn start(name: &str) -> anyhow::Result<Fleet> {
    let mut fleet = Fleet::new(name).await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    fleet.spawn("producer", "producer", &["run"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    fleet.spawn("worker", "worker", &["--task", TASK, "--model-dir", &model])?;
    Ok(fleet)
}

/// Runs every object under `in/` through the fleet; returns each
/// process's peak RSS in KiB.
async fn peaks(fleet: &Fleet, keys: &[&str], sample: &str) -> anyhow::Result<Vec<u64>> {
    let bucket = fleet.bucket.clone();
    fleet.run(
        "producer",
        &[
            "submit",
            &format!("s3://{bucket}/in/"),
            "--task",
            TASK,
            "--sample",
            sample,
        ],
    )?;
    let statuses = fleet
        .wait_for_status(keys, Duration::from_secs(3 * 3600))
        .await?;
    for s in &statuses {
        anyhow::ensure!(s["state"] == "done", "{s}");
    }
    PROCESSES.iter().map(|p| fleet.peak_rss_kib(p)).collect()
}

fn report(what: &str, small: &str, large: &str, a: &[u64], b: &[u64]) {
    for (i, p) in PROCESSES.iter().enumerate() {
        eprintln!(
            "{what}: {p:9} peak RSS {:>7.1} MiB ({small}) vs {:>7.1} MiB ({large}), x{:.2}",
            a[i] as f64 / 1024.0,
            b[i] as f64 / 1024.0,
            b[i] as f64 / a[i] as f64
        );
    }
}

/// Flat: the larger run may not need 25% (plus 16 MiB of allocator noise)
/// more than the smaller.
fn assert_flat(a: &[u64], b: &[u64]) {
    for (i, p) in PROCESSES.iter().enumerate() {
        assert!(
            b[i] <= a[i] * 5 / 4 + 16 * 1024,
            "{p}: peak RSS grew from {} to {} KiB",
            a[i],
            b[i]
        );
    }
}

fn video(seconds: u32) -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::temp_dir().join(format!("ff-memory-{seconds}s.mp4"));
    if !path.exists() {
        // Cheap to make and to decode: 160x120 at 10 fps, few bits.
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=10",
            "-t",
            &seconds.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "40",
            &path.to_string_lossy(),
        ])?;
    }
    Ok(path)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a 2-hour video: run by scripts/memory.sh"]
async fn peak_rss_is_flat_with_video_length() -> anyhow::Result<()> {
    let mut results = Vec::new();
    for seconds in [600, 7200] {
        let fleet = start(&format!("mem{seconds}")).await?;
        fleet.upload("in/long.mp4", &video(seconds)?).await?;
        results.push(peaks(&fleet, &["in/long.mp4"], "fps=0.5").await?);
        fleet.cleanup(&[TASK]).await?;
    }
    report("length", "10 min", "2 h", &results[0], &results[1]);
    assert_flat(&results[0], &results[1]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "1,000 videos: run by scripts/memory.sh"]
async fn peak_rss_is_flat_with_queued_videos() -> anyhow::Result<()> {
    let clip = std::env::temp_dir().join("ff-memory-clip.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=10",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        &clip.to_string_lossy(),
    ])?;
    let mut results = Vec::new();
    for count in [10, 1000] {
        let fleet = start(&format!("memq{count}")).await?;
        let keys: Vec<String> = (0..count).map(|i| format!("in/{i:04}.mp4")).collect();
        for key in &keys {
            fleet.upload(key, Path::new(&clip)).await?;
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        results.push(peaks(&fleet, &keys, "fps=1").await?);
        fleet.cleanup(&[TASK]).await?;
    }
    report(
        "queued",
        "10 videos",
        "1,000 videos",
        &results[0],
        &results[1],
    );
    assert_flat(&results[0], &results[1]);
    Ok(())
}
