//! Drop a video in the bucket and it is processed, once: `producer watch`
//! against the real store and broker, with two watchers racing.

use std::{path::Path, time::Duration};

use e2e::{Fleet, env, ffmpeg};
use lapin::{BasicProperties, options::BasicPublishOptions};
use serde_json::Value;

const TASK: &str = "embed.effnet-lite0";
const WAIT: Duration = Duration::from_secs(300);

/// A 1 s test pattern; `pattern` picks which, so bytes differ per call.
fn clip(dir: &Path, name: &str, pattern: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("{pattern}=size=160x120:rate=10:duration=1"),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        &path.to_string_lossy(),
    ])?;
    Ok(path)
}

fn start_workers(fleet: &mut Fleet) -> anyhow::Result<()> {
    let model = env("FF_TEST_MODEL_DIR")?;
    fleet.spawn("producer", "producer", &["run"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    fleet.spawn("worker", "worker", &["--task", TASK, "--model-dir", &model])
}

async fn status(fleet: &Fleet, key: &str) -> anyhow::Result<Option<Value>> {
    match fleet.get(&format!("outputs/status/{key}.json")).await? {
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        None => Ok(None),
    }
}

/// Waits for a status whose ETag differs from `not_etag`.
async fn wait_for_new_status(
    fleet: &Fleet,
    key: &str,
    not_etag: Option<&str>,
) -> anyhow::Result<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(s) = status(fleet, key).await?
            && s["etag"].as_str() != not_etag
        {
            return Ok(s);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no new status for {key}:\n{}\n{}",
            fleet.log("watch-a"),
            fleet.log("watch-b")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn queued_lines(fleet: &Fleet, key: &str) -> usize {
    let needle = format!("{key} ");
    ["watch-a", "watch-b"]
        .iter()
        .map(|w| fleet.log_lines(w, &["queued", &needle]))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_videos_are_processed_once_by_racing_watchers() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("discovery").await?;
    let dir = fleet.work.clone();
    start_workers(&mut fleet)?;
    let source = format!("s3://{}/in/", fleet.bucket);
    let watch = [
        "watch",
        source.as_str(),
        "--task",
        TASK,
        "--sample",
        "every=2",
        "--interval",
        "500ms",
    ];
    fleet.spawn("watch-a", "producer", &watch)?;
    fleet.spawn("watch-b", "producer", &watch)?;

    // Two objects land while both watchers run.
    let first = clip(&dir, "first.mp4", "testsrc")?;
    fleet.upload("in/a.mp4", &first).await?;
    std::fs::write(dir.join("notes.txt"), "not a video\n")?;
    fleet.upload("in/notes.txt", &dir.join("notes.txt")).await?;

    let done = wait_for_new_status(&fleet, "in/a.mp4", None).await?;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["frames"], 5, "every=2 of 10 frames");
    let etag = done["etag"]
        .as_str()
        .expect("status records the ETag")
        .to_owned();
    let fingerprint = done["fingerprint"].as_str().expect("and the pipeline");
    assert_eq!(fingerprint.len(), 32, "{fingerprint}");

    // Several more polls: nothing is queued again, the non-video was
    // reported once, and one watcher stood by the whole time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(queued_lines(&fleet, "in/a.mp4"), 1);
    let notes: usize = ["watch-a", "watch-b"]
        .iter()
        .map(|w| fleet.log_lines(w, &["not a video", "in/notes.txt"]))
        .sum();
    assert_eq!(notes, 1, "the non-video is reported once");
    let standing_by: Vec<&str> = ["watch-a", "watch-b"]
        .into_iter()
        .filter(|w| fleet.log_lines(w, &["standing by"]) == 1)
        .collect();
    assert_eq!(standing_by.len(), 1, "one watcher is active, one stands by");
    assert!(
        fleet.keys("outputs/.framefleet/").await?.is_empty(),
        "no claim or part outlives the run"
    );

    // The same bytes again: same ETag, skipped.
    fleet.upload("in/a.mp4", &first).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        queued_lines(&fleet, "in/a.mp4"),
        1,
        "identical bytes are skipped"
    );
    let unchanged = status(&fleet, "in/a.mp4").await?.expect("status");
    assert_eq!(
        unchanged["finished_at_unix_ms"],
        done["finished_at_unix_ms"]
    );

    // New bytes under the same key: processed again.
    let second = clip(&dir, "second.mp4", "smptebars")?;
    fleet.upload("in/a.mp4", &second).await?;
    let redone = wait_for_new_status(&fleet, "in/a.mp4", Some(&etag)).await?;
    assert_eq!(redone["state"], "done", "{redone}");
    assert_eq!(queued_lines(&fleet, "in/a.mp4"), 2);

    // The active watcher dies; the other takes over and keeps going.
    let active = if standing_by[0] == "watch-a" {
        "watch-b"
    } else {
        "watch-a"
    };
    fleet.kill(active)?;
    fleet.upload("in/b.mp4", &first).await?;
    let b = wait_for_new_status(&fleet, "in/b.mp4", None).await?;
    assert_eq!(b["state"], "done", "{b}");
    assert_eq!(fleet.log_lines(standing_by[0], &["queued", "in/b.mp4 "]), 1);

    // submit shares the skip rule. It queues what the watcher left alone
    // (a one-off run takes every object: the text file fails, saying why),
    // and a second pass finds everything done and queues nothing (exit 3).
    let submit = ["submit", &source, "--task", TASK, "--sample", "every=2"];
    let out = fleet.run("producer", &submit)?;
    assert!(out.contains("1 videos submitted"), "{out}");
    assert!(out.contains("2 already done"), "{out}");
    let notes = fleet.wait_for_status(&["in/notes.txt"], WAIT).await?;
    assert_eq!(notes[0]["state"], "failed", "{}", notes[0]);
    let out = fleet.output("producer", &submit, &[])?;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0 videos submitted"), "{stdout}");
    assert!(stdout.contains("3 already done"), "{stdout}");
    let forced = fleet.run("producer", &[&submit[..], &["--force"]].concat())?;
    assert!(forced.contains("3 videos submitted"), "{forced}");
    // A different pipeline is a different run (with its own output prefix:
    // pipelines sharing one would overwrite each other's statuses).
    let other = format!("s3://{}/other/", fleet.bucket);
    let out = fleet.run(
        "producer",
        &[
            "submit", &source, "--task", TASK, "--sample", "every=5", "--output", &other,
        ],
    )?;
    assert!(out.contains("3 videos submitted"), "{out}");
    fleet.cleanup(&[TASK]).await
}

/// A task whose object disappears or changes before it is decoded ends
/// with a failed status saying so, not a hang.
#[tokio::test(flavor = "multi_thread")]
async fn objects_deleted_or_replaced_after_queueing_fail_clearly() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("vanished").await?;
    let dir = fleet.work.clone();
    let first = clip(&dir, "first.mp4", "testsrc")?;
    let second = clip(&dir, "second.mp4", "smptebars")?;
    fleet.upload("in/gone.mp4", &first).await?;
    fleet.upload("in/changed.mp4", &first).await?;
    let source = format!("s3://{}/in/", fleet.bucket);
    let out = fleet.run("producer", &["submit", &source, "--task", TASK])?;
    assert!(out.contains("2 videos submitted"), "{out}");
    fleet
        .s3
        .delete_object()
        .bucket(&fleet.bucket)
        .key("in/gone.mp4")
        .send()
        .await?;
    fleet.upload("in/changed.mp4", &second).await?;

    start_workers(&mut fleet)?;
    let status = fleet
        .wait_for_status(&["in/gone.mp4", "in/changed.mp4"], WAIT)
        .await?;
    assert_eq!(status[0]["state"], "failed");
    let gone = status[0]["error"].as_str().unwrap_or_default();
    assert!(
        gone.contains("in/gone.mp4") && gone.contains("no longer exists"),
        "{gone}"
    );
    assert_eq!(status[1]["state"], "failed");
    let changed = status[1]["error"].as_str().unwrap_or_default();
    assert!(
        changed.contains("in/changed.mp4") && changed.contains("replaced after it was queued"),
        "{changed}"
    );
    // The replaced object's new bytes are a new run: submit queues it.
    let out = fleet.run("producer", &["submit", &source, "--task", TASK])?;
    assert!(out.contains("1 videos submitted"), "{out}");
    fleet.cleanup(&[TASK]).await
}

/// A store that publishes S3 event notifications gets videos processed
/// without waiting for a poll; malformed notifications are dead-lettered.
#[tokio::test(flavor = "multi_thread")]
async fn event_notifications_queue_videos() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("events").await?;
    let dir = fleet.work.clone();
    start_workers(&mut fleet)?;
    let exchange = format!("{}.s3-events", fleet.namespace);
    let source = format!("s3://{}/in/", fleet.bucket);
    // Polls far apart: only the first, on an empty prefix, happens.
    fleet.spawn(
        "watch-a",
        "producer",
        &[
            "watch",
            &source,
            "--task",
            TASK,
            "--interval",
            "1h",
            "--events-exchange",
            &exchange,
        ],
    )?;
    fleet
        .wait_for_log("watch-a", &["consuming S3 event notifications"], WAIT)
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let clip = clip(&dir, "clip.mp4", "testsrc")?;
    fleet.upload("in/dropped clip.mp4", &clip).await?;
    let etag = fleet
        .s3
        .head_object()
        .bucket(&fleet.bucket)
        .key("in/dropped clip.mp4")
        .send()
        .await?
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned();
    // As MinIO sends it: the key form-encoded.
    let event = serde_json::json!({
        "EventName": "s3:ObjectCreated:Put",
        "Records": [{
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "eventName": "s3:ObjectCreated:Put",
            "s3": {
                "bucket": {"name": fleet.bucket},
                "object": {"key": "in%2Fdropped+clip.mp4", "eTag": etag, "size": 1}
            }
        }]
    });
    let connection = fleet.connect("e2e events").await?;
    let channel = connection.create_channel().await?;
    for body in [
        event.to_string().into_bytes(),
        b"{\"not\": an event".to_vec(),
    ] {
        channel
            .basic_publish(
                exchange.as_str().into(),
                "framefleet.put".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await?
            .await?;
    }
    let status = fleet
        .wait_for_status(&["in/dropped clip.mp4"], WAIT)
        .await?;
    assert_eq!(status[0]["state"], "done", "{}", status[0]);
    assert_eq!(
        fleet.log_lines("watch-a", &["queued", "via=\"event\""]),
        1,
        "{}",
        fleet.log("watch-a")
    );
    fleet
        .wait_for_log(
            "watch-a",
            &["message dead-lettered", "cause=\"not_s3_event\""],
            WAIT,
        )
        .await?;
    // The events queue and exchange are the watcher's own; remove them once
    // it is gone (a live watcher would declare its queue again).
    fleet.kill("watch-a")?;
    let log = fleet.log("watch-a");
    let queue = log
        .split("queue=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|q| q.trim_matches('"'))
        .expect("the watcher names its events queue");
    channel
        .queue_delete(queue.into(), Default::default())
        .await?;
    channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await?;
    connection.close(200, "done".into()).await.ok();
    fleet.cleanup(&[TASK]).await
}

/// Pagination and report-once over more objects than one listing page.
#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_of_many_objects_is_listed_page_by_page() -> anyhow::Result<()> {
    const JUNK: usize = 1200;
    let mut fleet = Fleet::new("many").await?;
    let dir = fleet.work.clone();
    let mut uploads = tokio::task::JoinSet::new();
    for i in 0..JUNK {
        let (s3, bucket) = (fleet.s3.clone(), fleet.bucket.clone());
        uploads.spawn(async move {
            s3.put_object()
                .bucket(bucket)
                .key(format!("in/junk/{i:05}.txt"))
                .body(format!("object {i}").into_bytes().into())
                .send()
                .await
        });
        while uploads.len() >= 32 {
            uploads.join_next().await.expect("task")??;
        }
    }
    while let Some(done) = uploads.join_next().await {
        done??;
    }
    // Lexically after every junk key: found only on the second page.
    fleet
        .upload("in/zz.mp4", &clip(&dir, "clip.mp4", "testsrc")?)
        .await?;
    start_workers(&mut fleet)?;
    let source = format!("s3://{}/in/", fleet.bucket);
    fleet.spawn(
        "watch-a",
        "producer",
        &["watch", &source, "--task", TASK, "--interval", "500ms"],
    )?;
    let status = fleet.wait_for_status(&["in/zz.mp4"], WAIT).await?;
    assert_eq!(status[0]["state"], "done", "{}", status[0]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        fleet.log_lines("watch-a", &["not a video"]),
        JUNK,
        "every non-video reported exactly once over several polls"
    );
    fleet.cleanup(&[TASK]).await
}
