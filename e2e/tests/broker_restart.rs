//! Fault 1: the broker restarted mid-run, twice. First `stop_app` /
//! `start_app` while the producer is publishing under back-pressure (the
//! frames queue full), the worker is mid-batch and the collector is writing
//! parts; then a full node stop and start as the collector begins assembling
//! the outputs. Every process rides both out on a new connection of its
//! own (`fleet/src/reconnect.rs`), and the video ends `done` with every
//! frame exactly once.
//!
//! Only test in this binary: it stops the shared local broker, and cargo
//! runs test binaries one after another.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use e2e::{BrokerGuard, Fleet, OPENCV_DATA, env, ffprobe_frames, rabbitmqctl};

const TASK: &str = "embed.effnet-lite0";

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_rides_out_broker_restarts() -> anyhow::Result<()> {
    let _guard = BrokerGuard;
    let mut fleet = Fleet::new("broker").await?;
    let video = Path::new(OPENCV_DATA).join("vtest.avi");
    fleet.upload("in/vtest.avi", &video).await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    // One frame per job: 795 jobs against a queue that holds 256, so the
    // producer is refused and backs off. The worker starts only once the
    // queue is full: started at once, a worker faster than the producer's
    // one-frame publishes kept the queue drained and the video finished
    // without back-pressure (seen once, after EfficientNet got faster).
    fleet.spawn("producer", "producer", &["run", "--job-frames", "1"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    let bucket = fleet.bucket.clone();
    fleet.run(
        "producer",
        &["submit", &format!("s3://{bucket}/in/"), "--task", TASK],
    )?;

    let frames_queue = format!("frames.{TASK}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while fleet.ready(&frames_queue).unwrap_or(0) < 240 {
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
    let deadline = Instant::now() + Duration::from_secs(120);
    while fleet.log_lines("worker", &["progress"]) == 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker never got busy:\n{}",
            fleet.log("worker")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the worker's start-up (its first resubscription, when prefetch
    // is fitted): a restart moments after a worker starts is
    // broker_stall.rs's case.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Still under back-pressure: the producer is mid-video, the queue well
    // filled (counting what the worker holds).
    let held = fleet.ready(&frames_queue).unwrap_or(0) + fleet.unacked(&frames_queue).unwrap_or(0);
    anyhow::ensure!(
        held >= 128 && fleet.log_lines("producer", &["video published"]) == 0,
        "no longer under back-pressure when the worker got busy ({held} jobs held):\n{}",
        fleet.log("producer")
    );
    rabbitmqctl(&["stop_app"])?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rabbitmqctl(&["start_app"])?;
    rabbitmqctl(&["await_startup"])?;
    eprintln!("broker app restarted under back-pressure");

    fleet
        .wait_for_log(
            "collector",
            &["assembling outputs"],
            Duration::from_secs(600),
        )
        .await?;
    rabbitmqctl(&["shutdown"])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    BrokerGuard::start_node()?;
    eprintln!("broker node restarted as the collector assembled");

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
    // Both restarts: each one a lost connection and a new one. An idle
    // process may still be backing off (≤ 5 s) when the video is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    for label in ["producer", "collector", "worker"] {
        while fleet.log_lines(label, &["reconnected to the broker"]) < 2 {
            assert!(
                fleet.exited(label)?.is_none(),
                "{label} died with the broker:\n{}",
                fleet.log(label)
            );
            assert!(
                Instant::now() < deadline,
                "{label} did not reconnect after both restarts:\n{}",
                fleet.log(label)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Nothing was dead-lettered: two restarts are well inside the
    // delivery limit, and no message was mistaken for a bad one.
    assert_eq!(fleet.ready("dead")?, 0, "dead letters after the restarts");
    fleet.cleanup(&[TASK]).await
}
