//! `ops dead`: a task that died (here, after the store refused the
//! producer five times, with `--store-retry 0s`) is listed with its queue and reason, requeued, and
//! completes; junk is purged by reason.

use std::time::Duration;

use e2e::{Fleet, env, ffmpeg};
use serde_json::Value;

const TASK: &str = "embed.effnet-lite0";
const WAIT: Duration = Duration::from_secs(300);

async fn dead_letters(fleet: &Fleet) -> anyhow::Result<Vec<Value>> {
    let out = fleet.run("ops", &["dead", "list", "--json"])?;
    Ok(serde_json::from_str(&out)?)
}

async fn wait_for_dead_letters(fleet: &Fleet, count: usize) -> anyhow::Result<Vec<Value>> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let letters = dead_letters(fleet).await?;
        if letters.len() >= count {
            return Ok(letters);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{} dead letters, waited for {count}:\n{}",
            letters.len(),
            fleet.log("producer-bad")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_listed_requeued_and_purged() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("dead").await?;
    let clip = fleet.work.join("clip.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=10:duration=1",
        "-c:v",
        "libx264",
        &clip.to_string_lossy(),
    ])?;
    fleet.upload("in/clip.mp4", &clip).await?;
    let source = format!("s3://{}/in/", fleet.bucket);
    let out = fleet.run("producer", &["submit", &source, "--task", TASK])?;
    assert!(out.contains("1 videos submitted"), "{out}");

    // A producer whose store credential is wrong requeues the task until
    // the queue's delivery limit dead-letters it.
    fleet.spawn_with_env(
        "producer-bad",
        "producer",
        &["run"],
        // No waiting out the "outage" in place: each refusal requeues at
        // once, so the delivery limit is reached in seconds.
        &[
            ("AWS_SECRET_ACCESS_KEY", "wrong-secret"),
            ("FF_STORE_RETRY", "0s"),
        ],
    )?;
    let letters = wait_for_dead_letters(&fleet, 1).await?;
    fleet.kill("producer-bad")?;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["queue"], format!("{}.videos", fleet.namespace));
    assert_eq!(letter["reason"], "delivery_limit", "{letter}");
    assert_eq!(letter["kind"], "video_task");
    assert_eq!(
        letter["video"],
        format!("s3://{}/in/clip.mp4", fleet.bucket)
    );
    let table = fleet.run("ops", &["dead", "list"])?;
    assert!(
        table.contains("videos")
            && table.contains("delivery_limit")
            && table.contains("in/clip.mp4"),
        "{table}"
    );
    assert!(table.lines().all(|l| l.chars().count() <= 80), "{table}");
    let peek: Value = serde_json::from_str(&fleet.run("ops", &["dead", "peek", "1"])?)?;
    assert!(
        peek["message"]
            .as_str()
            .unwrap_or_default()
            .contains("VideoTask"),
        "{peek}"
    );
    // Listing and peeking leave the letter where it was.
    assert_eq!(dead_letters(&fleet).await?.len(), 1);

    // The fleet is healthy again: requeue, and the video completes.
    let model = env("FF_TEST_MODEL_DIR")?;
    fleet.spawn("producer", "producer", &["run"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    fleet.spawn("worker", "worker", &["--task", TASK, "--model-dir", &model])?;
    let out = fleet.run("ops", &["dead", "requeue", "--all"])?;
    assert!(out.contains("1 dead letters requeued"), "{out}");
    let status = fleet.wait_for_status(&["in/clip.mp4"], WAIT).await?;
    assert_eq!(status[0]["state"], "done", "{}", status[0]);
    assert!(dead_letters(&fleet).await?.is_empty());

    // Junk on the videos queue dies with Framefleet's own reason; purge by it.
    fleet
        .publish_raw(fleet::Topology::VIDEOS_KEY, b"junk")
        .await?;
    let letters = wait_for_dead_letters(&fleet, 1).await?;
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("magic"),
        "{letters:?}"
    );
    assert_eq!(letters[0]["kind"], "undecodable");
    let out = fleet.run("ops", &["dead", "purge", "--reason", "magic"])?;
    assert!(out.contains("1 dead letters purged"), "{out}");
    assert!(dead_letters(&fleet).await?.is_empty());
    fleet.cleanup(&[TASK]).await
}
