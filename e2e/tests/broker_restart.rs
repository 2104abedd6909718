//! Fault 1: the broker restarted mid-run, twice. First `stop_app` /
//! `start_app` while the producer is publishing under back-pressure (the
//! frames queue full), the worker is mid-batch and the collector is writing
//! parts; then a full node stop and start as the collector begins assembling
//! the outputs. Every process rides both out on lapin's recovery, and the
//! video ends `done` with every frame exactly once.
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
    // producer is refused and backs off while the worker catches up.
    fleet.spawn("producer", "producer", &["run", "--job-frames", "1"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
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
    let bucket = fleet.bucket.clone();
    fleet.run(
        "producer",
        &["submit", &format!("s3://{bucket}/in/"), "--task", TASK],
    )?;

    let frames_queue = format!("frames.{TASK}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Within 16 of the 256 cap, counting what the worker holds: its
        // prefetch of 8 unacked jobs leaves at most 248 ready, so a ready
        // count alone reached the mark only by luck (a flaky precondition).
        let held =
            fleet.ready(&frames_queue).unwrap_or(0) + fleet.unacked(&frames_queue).unwrap_or(0);
        let full = held >= 240;
        if full && fleet.log_lines("worker", &["progress"]) > 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "never under back-pressure with the worker busy:\n{}",
            fleet.log("worker")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    for label in ["producer", "collector", "worker"] {
        assert!(
            fleet.exited(label)?.is_none(),
            "{label} died with the broker:\n{}",
            fleet.log(label)
        );
        // lapin logs the dropped socket; our code logs waiting for the
        // recovery or an ack lost with the channel, whichever it met.
        let noticed = ["error doing IO", "recover", "ack not sent", "ack lost"]
            .iter()
            .map(|needle| fleet.log_lines(label, &[needle]))
            .sum::<usize>();
        assert!(
            noticed > 0,
            "{label} never noticed the restarts:\n{}",
            fleet.log(label)
        );
    }
    // Nothing was dead-lettered: two restarts are well inside the
    // delivery limit, and no message was mistaken for a bad one.
    assert_eq!(fleet.ready("dead")?, 0, "dead letters after the restarts");
    fleet.cleanup(&[TASK]).await
}
