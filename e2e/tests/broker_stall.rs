//! Fault 1, the broker restarted moments after a worker started: the
//! worker is acking and publishing its first results as the socket dies.
//! That once stalled lapin 4.12.3's own recovery for good (frames left
//! queued for the dead socket kept its io loop waiting on it). The fleet
//! now reconnects by itself (`fleet/src/reconnect.rs`): every process must
//! come back on a new connection, none may exit, and the video ends `done`
//! with every frame exactly once and nothing dead-lettered.
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
async fn a_restart_as_the_worker_starts_is_ridden_out() -> anyhow::Result<()> {
    let _guard = BrokerGuard;
    let mut fleet = Fleet::new("broker").await?;
    let video = Path::new(OPENCV_DATA).join("vtest.avi");
    fleet.upload("in/vtest.avi", &video).await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    // One frame per job: 795 jobs against a queue that holds 256, so the
    // producer is refused and backs off while the worker catches up.
    fleet.spawn("producer", "producer", &["run", "--job-frames", "1"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    let bucket = fleet.bucket.clone();
    fleet.run(
        "producer",
        &["submit", &format!("s3://{bucket}/in/"), "--task", TASK],
    )?;

    // The worker starts only once the frames queue is full: on a slow
    // machine a running worker outpaces decoding and the queue never fills
    // (the store-restart test met exactly that in CI).
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
    let worker_args = [
        "--task",
        TASK,
        "--model-dir",
        &model,
        "--max-batch",
        "8",
        "--prefetch",
        "8",
    ];
    fleet.spawn("worker", "worker", &worker_args)?;
    // The first part stored means the worker is mid-run and the collector
    // is writing; the queue is still near its cap (ready + the worker's
    // unacked prefetch), so the producer is being refused.
    loop {
        let held =
            fleet.ready(&frames_queue).unwrap_or(0) + fleet.unacked(&frames_queue).unwrap_or(0);
        if held >= 240 && !fleet.keys("outputs/.framefleet/parts/").await?.is_empty() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "never under back-pressure with parts written (held {held}):\n{}",
            fleet.log("worker")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(
        fleet.log_lines("producer", &["video published"]) == 0,
        "the producer finished before the restart:\n{}",
        fleet.log("producer")
    );
    rabbitmqctl(&["stop_app"])?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rabbitmqctl(&["start_app"])?;
    rabbitmqctl(&["await_startup"])?;
    eprintln!("broker app restarted under back-pressure");

    // The bound covers the worker embedding the whole video on slow CI
    // cores.
    fleet
        .wait_for_log(
            "collector",
            &["assembling outputs"],
            Duration::from_secs(600),
        )
        .await?;

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
    // An idle process may still be backing off (≤ 5 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    for label in ["producer", "collector", "worker"] {
        while fleet.log_lines(label, &["reconnected to the broker"]) == 0 {
            assert!(
                fleet.exited(label)?.is_none(),
                "{label} died with the broker:\n{}",
                fleet.log(label)
            );
            assert!(
                Instant::now() < deadline,
                "{label} never reconnected:\n{}",
                fleet.log(label)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Nothing was dead-lettered: a restart is well inside the delivery
    // limit, and no message was mistaken for a bad one.
    assert_eq!(fleet.ready("dead")?, 0, "dead letters after the restarts");
    fleet.cleanup(&[TASK]).await
}
