//! SIGTERM to each process mid-run: it stops consuming, finishes or returns
//! what it holds, and exits 0 within its bound; restarted, the fleet
//! finishes the video with every sampled frame exactly once.
//!
//! Bounds (ARCHITECTURE.md): producer, collector and watcher 10 s (a
//! publish or store in progress); worker one model batch plus its publish,
//! 30 s for EfficientNet-Lite0 on this CPU.

use std::{path::Path, time::Duration};

use e2e::{Fleet, OPENCV_DATA, env};
use serde_json::Value;

const TASK: &str = "embed.effnet-lite0";

fn start(fleet: &mut Fleet, model: &str, source: &str, round: u32) -> anyhow::Result<()> {
    fleet.spawn(
        &format!("producer{round}"),
        "producer",
        &["run", "--job-frames", "4"],
    )?;
    fleet.spawn(&format!("collector{round}"), "producer", &["collect"])?;
    fleet.spawn(
        &format!("worker{round}"),
        "worker",
        &[
            "--task",
            TASK,
            "--model-dir",
            model,
            "--max-batch",
            "4",
            "--prefetch",
            "2",
        ],
    )?;
    fleet.spawn(
        &format!("watch{round}"),
        "producer",
        &[
            "watch",
            source,
            "--task",
            TASK,
            "--sample",
            "every=9",
            "--interval",
            "500ms",
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_process_stops_cleanly_on_sigterm() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("sigterm").await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    let source = format!("s3://{}/in/", fleet.bucket);
    fleet
        .upload(
            "in/vtest.avi",
            Path::new(OPENCV_DATA).join("vtest.avi").as_path(),
        )
        .await?;
    start(&mut fleet, &model, &source, 1)?;
    // Mid-run: the worker has results out, and jobs are still queued.
    fleet
        .wait_for_log("worker1", &["progress"], Duration::from_secs(120))
        .await?;
    for (label, bound) in [
        ("worker1", 30),
        ("producer1", 10),
        ("collector1", 10),
        ("watch1", 10),
    ] {
        let (status, took) = fleet.terminate(label, Duration::from_secs(bound)).await?;
        assert!(
            status.success(),
            "{label} exited with {status}:\n{}",
            fleet.log(label)
        );
        assert!(
            fleet.log_lines(label, &["shutdown requested"]) == 1,
            "{label} said it was stopping:\n{}",
            fleet.log(label)
        );
        eprintln!("{label}: exit 0 {took:?} after SIGTERM");
    }
    assert!(
        fleet
            .get("outputs/status/in/vtest.avi.json")
            .await?
            .is_none(),
        "stopped mid-run, before the video finished"
    );

    start(&mut fleet, &model, &source, 2)?;
    let status = fleet
        .wait_for_status(&["in/vtest.avi"], Duration::from_secs(300))
        .await?;
    assert_eq!(status[0]["state"], "done", "{}", status[0]);
    let frames: Value = serde_json::from_slice(
        &fleet
            .get("outputs/embeddings/in/vtest.avi.frames.json")
            .await?
            .expect("frames written"),
    )?;
    let index: Vec<u64> = frames
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|f| f["index"].as_u64())
        .collect();
    let expected: Vec<u64> = (0..795).step_by(9).collect();
    assert_eq!(
        index, expected,
        "every sampled frame exactly once, in order"
    );
    fleet.cleanup(&[TASK]).await
}
