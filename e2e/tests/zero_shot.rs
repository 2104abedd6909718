//! A zero-shot head in the fleet, as any trained head runs there:
//! `worker head zero-shot` builds it from label names with the tiny CLIP
//! fixture's text tower; a worker serving `embed.clip-vit-b32` runs it on
//! every batch; the collector writes `heads/NAME/KEY.jsonl` and
//! `frames.json`; and `worker head apply` over the stored embeddings gives
//! the same answers, score for score. (That the head's probabilities are
//! transformers' zero-shot ones is worker/tests/zero_shot.rs.)

use std::{collections::BTreeMap, path::Path, time::Duration};

use e2e::{Fleet, ffmpeg};
use serde_json::Value;

const TASK: &str = "embed.clip-vit-b32";
const FRAMES: usize = 12;
const LABELS: [&str; 3] = ["a dog", "a chessboard", "sunflowers"];

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../worker/tests/fixtures/clip-tiny")
        .to_string_lossy()
        .into_owned()
}

fn jsonl(bytes: &[u8]) -> anyhow::Result<Vec<Value>> {
    std::str::from_utf8(bytes)?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// index → (label, score) of a head's output lines.
fn answers(lines: &[Value]) -> BTreeMap<u64, (String, f64)> {
    lines
        .iter()
        .map(|l| {
            (
                l["index"].as_u64().unwrap_or(u64::MAX),
                (
                    l["label"].as_str().unwrap_or_default().to_owned(),
                    l["score"].as_f64().unwrap_or(f64::NAN),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zero_shot_head_runs_in_the_fleet_and_offline_alike() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("zeroshot").await?;
    let head = fleet.work.join("scene");
    let head = head.to_string_lossy().into_owned();
    let built = fleet.run(
        "worker",
        &[
            "head",
            "zero-shot",
            "--model-dir",
            &fixture(),
            "--labels",
            &LABELS.join(","),
            "--name",
            "scene",
            "--out",
            &head,
        ],
    )?;
    assert!(built.contains("zero-shot over 3 labels"), "{built}");

    // Moving test-card content: the frames differ from one another.
    let video = fleet.work.join("card.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=10",
        "-frames:v",
        &FRAMES.to_string(),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        &video.to_string_lossy(),
    ])?;
    fleet.upload("in/card.mp4", &video).await?;
    fleet.spawn("producer", "producer", &["run"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    fleet.spawn(
        "worker",
        "worker",
        &["--task", TASK, "--model-dir", &fixture(), "--head", &head],
    )?;
    let bucket = fleet.bucket.clone();
    fleet.run(
        "producer",
        &["submit", &format!("s3://{bucket}/in/"), "--task", TASK],
    )?;
    let status = fleet
        .wait_for_status(&["in/card.mp4"], Duration::from_secs(300))
        .await?;
    assert_eq!(status[0]["state"], "done", "{}", status[0]);

    let key = "outputs/heads/scene/in/card.mp4.jsonl";
    let in_fleet = jsonl(
        &fleet
            .get(key)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the collector wrote no head output"))?,
    )?;
    assert_eq!(in_fleet.len(), FRAMES);
    for line in &in_fleet {
        let label = line["label"].as_str().unwrap_or_default();
        let score = line["score"].as_f64().unwrap_or(f64::NAN);
        assert!(LABELS.contains(&label), "{line}");
        // The most probable of three classes.
        assert!((1.0 / 3.0..=1.0).contains(&score), "{line}");
    }
    let frames: Value = serde_json::from_slice(
        &fleet
            .get("outputs/embeddings/in/card.mp4.frames.json")
            .await?
            .ok_or_else(|| anyhow::anyhow!("no frames.json"))?,
    )?;
    for (line, frame) in in_fleet.iter().zip(frames.as_array().into_iter().flatten()) {
        assert_eq!(frame["heads"]["scene"]["label"], line["label"], "{frame}");
    }

    // Offline, from the stored embeddings alone: the same answers.
    let report = fleet.run(
        "worker",
        &[
            "head",
            "apply",
            "--embeddings",
            &format!("s3://{bucket}/outputs/"),
            "--head",
            &head,
        ],
    )?;
    assert!(
        report.contains(&format!("1 videos, {FRAMES} frames")),
        "{report}"
    );
    let offline = jsonl(
        &fleet
            .get(key)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no offline head output"))?,
    )?;
    assert_eq!(answers(&offline), answers(&in_fleet));
    fleet.cleanup(&[TASK]).await?;
    Ok(())
}
