//! Fault 2: the S3 store crashes and restarts mid-run, twice. First while
//! libav is reading the video (the producer held back by a full frames
//! queue, mid-file) and the collector is writing parts; then as the
//! collector begins the multipart assembly. libav reconnects and resumes
//! its read; the collector waits the outage out and assembles again. The
//! video ends `done` with every frame exactly once, and nothing is
//! dead-lettered.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use e2e::{Fleet, OPENCV_DATA, S3Server, env, ffprobe_frames};

const TASK: &str = "embed.effnet-lite0";

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_rides_out_store_restarts() -> anyhow::Result<()> {
    let data = tempdir()?;
    let mut store = S3Server::start(&data.join("s3"))?;
    let mut fleet = Fleet::on_store("store", &store.endpoint()).await?;
    let video = Path::new(OPENCV_DATA).join("vtest.avi");
    fleet.upload("in/vtest.avi", &video).await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    fleet.spawn("producer", "producer", &["run", "--job-frames", "1"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    let bucket = fleet.bucket.clone();
    fleet.run(
        "producer",
        &["submit", &format!("s3://{bucket}/in/"), "--task", TASK],
    )?;

    // The worker starts only once the frames queue is full: on a slow
    // machine a running worker outpaces decoding, the queue never fills and
    // the producer is never held mid-read (CI saw exactly that).
    let frames_queue = format!("frames.{TASK}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while fleet.ready(&frames_queue).unwrap_or(0) < 250 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the frames queue never filled:\n{}",
            fleet.log("producer")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet.spawn(
        "worker",
        "worker",
        &[
            "--task",
            TASK,
            "--model-dir",
            &model,
            "--max-batch",
            "8",
            "--prefetch",
            "8",
        ],
    )?;
    while fleet.keys("outputs/.framefleet/parts/").await?.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker wrote no part:\n{}",
            fleet.log("worker")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // More than 500 frames are still to decode at a worker's pace, so the
    // read is mid-file; checked, so that the test cannot pass vacuously.
    anyhow::ensure!(
        fleet.log_lines("producer", &["video published"]) == 0,
        "the producer finished before the outage:\n{}",
        fleet.log("producer")
    );
    store.kill()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    store.restart()?;
    eprintln!("store restarted mid-read");

    fleet
        .wait_for_log(
            "collector",
            &["assembling outputs"],
            Duration::from_secs(600),
        )
        .await?;
    store.kill()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    store.restart()?;
    eprintln!("store restarted as the collector assembled");

    let status = fleet
        .wait_for_status(&["in/vtest.avi"], Duration::from_secs(300))
        .await?;
    assert_eq!(status[0]["state"], "done", "{}", status[0]);
    let frames = ffprobe_frames(&video)?;
    assert_eq!(
        fleet.embedded_frames("in/vtest.avi").await?,
        (0..frames).collect::<Vec<_>>(),
        "every frame exactly once, in order"
    );
    assert_eq!(fleet.ready("dead")?, 0, "dead letters after the restarts");
    assert!(
        fleet.log_lines("collector", &["store failed, retried"]) > 0,
        "the collector met the outage:\n{}",
        fleet.log("collector")
    );
    fleet.cleanup(&[TASK]).await?;
    std::fs::remove_dir_all(&data).ok();
    Ok(())
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("ff-store-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
