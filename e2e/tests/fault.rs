//! A worker SIGKILLed mid-run loses nothing: its unacked jobs go to another
//! worker, and the outputs are complete without duplicates.

use std::{path::Path, time::Duration};

use e2e::{Fleet, OPENCV_DATA, env, ffprobe_frames, read_npy_f32};

const TASK: &str = "embed.effnet-lite0";

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_workers_jobs_finish_elsewhere_exactly_once() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("fault").await?;
    let video = Path::new(OPENCV_DATA).join("vtest.avi");
    fleet.upload("in/vtest.avi", &video).await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    let worker_args = [
        "--task",
        TASK,
        "--model-dir",
        &model,
        "--prefetch",
        "4",
        "--max-batch",
        "8",
    ];
    fleet.spawn("producer", "producer", &["run", "--job-frames", "8"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    fleet.spawn("worker-a", "worker", &worker_args)?;
    let bucket = fleet.bucket.clone();
    fleet.run(
        "producer",
        &[
            "submit",
            &format!("s3://{bucket}/in/"),
            "--task",
            TASK,
            "--sample",
            "every=4",
        ],
    )?;

    // Kill worker A as soon as its first result is stored: it still holds
    // prefetched, unacked jobs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while fleet.keys("outputs/.framefleet/parts/").await?.is_empty() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "worker A produced nothing:\n{}",
            fleet.log("worker-a")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.kill("worker-a")?;
    assert!(
        fleet
            .get("outputs/status/in/vtest.avi.json")
            .await?
            .is_none(),
        "killed before the video finished"
    );
    fleet.spawn("worker-b", "worker", &worker_args)?;

    let status = fleet
        .wait_for_status(&["in/vtest.avi"], Duration::from_secs(600))
        .await?;
    assert_eq!(status[0]["state"], "done", "{status:#?}");
    let expected = ffprobe_frames(&video)?.div_ceil(4);
    let npy = fleet
        .get("outputs/embeddings/in/vtest.avi.npy")
        .await?
        .expect("npy");
    assert_eq!(read_npy_f32(&npy)?.0 as u64, expected);
    let frames: serde_json::Value = serde_json::from_slice(
        &fleet
            .get("outputs/embeddings/in/vtest.avi.frames.json")
            .await?
            .expect("frames"),
    )?;
    let index: Vec<u64> = frames
        .as_array()
        .expect("array")
        .iter()
        .map(|f| f["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(
        index,
        (0..expected).map(|i| i * 4).collect::<Vec<_>>(),
        "every sampled frame exactly once, in order"
    );
    assert!(
        fleet.log("worker-b").contains("progress"),
        "worker B did the remaining work"
    );
    fleet.cleanup(&[TASK]).await
}
