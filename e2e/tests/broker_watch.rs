//! Fault 1 for discovery: the broker restarted under `producer watch`. The
//! watcher's lease (an exclusive queue) and its publisher die with its
//! connection; it must come back on a new one, take the lease again and
//! go on queueing what lands in the bucket, without exiting.
//!
//! Only test in this binary: it stops the shared local broker, and cargo
//! runs test binaries one after another.

use std::time::{Duration, Instant};

use e2e::{BrokerGuard, Fleet, env, ffmpeg, rabbitmqctl};

const TASK: &str = "embed.effnet-lite0";
const WAIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_takes_its_lease_again_after_a_broker_restart() -> anyhow::Result<()> {
    let _guard = BrokerGuard;
    let mut fleet = Fleet::new("brokerwatch").await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    fleet.spawn("producer", "producer", &["run"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    fleet.spawn("worker", "worker", &["--task", TASK, "--model-dir", &model])?;
    let source = format!("s3://{}/in/", fleet.bucket);
    fleet.spawn(
        "watch",
        "producer",
        &["watch", &source, "--task", TASK, "--interval", "500ms"],
    )?;
    // The lease taken: the line names the polling interval.
    let leading = ["watching", "interval"];
    fleet.wait_for_log("watch", &leading, WAIT).await?;

    rabbitmqctl(&["stop_app"])?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rabbitmqctl(&["start_app"])?;
    rabbitmqctl(&["await_startup"])?;

    // Dropped in the bucket after the restart: only a watcher that came
    // back queues it.
    let clip = fleet.work.join("after.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=10:duration=1",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        &clip.to_string_lossy(),
    ])?;
    fleet.upload("in/after.mp4", &clip).await?;
    let status = fleet.wait_for_status(&["in/after.mp4"], WAIT).await?;
    assert_eq!(status[0]["state"], "done", "{}", status[0]);

    let deadline = Instant::now() + Duration::from_secs(60);
    for label in ["watch", "producer", "collector", "worker"] {
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
    assert!(
        fleet.log_lines("watch", &leading) >= 2,
        "the lease was not taken again:\n{}",
        fleet.log("watch")
    );
    fleet.cleanup(&[TASK]).await
}
