//! Fault 5: a model slower than the broker's ack timeout allows. With
//! `consumer_timeout` lowered to 20 s, a worker allowed to hold 64 jobs
//! of 8 frames (far more than it can run in 20 s) must still never hold a
//! delivery that long: it holds one job until it has measured itself,
//! then only as many as fit in half the timeout. The test watches the
//! broker's unacked count for the frames queue throughout and holds it
//! against the worker's measured speed; every video ends `done` with every
//! sampled frame once, and the broker never closed the channel.
//!
//! The same video goes in `COPIES` times: one copy was 3 s of work for
//! the worker on a Zen 5 core, over before `rabbitmqctl` (over a second a
//! call while the model has both cores) had seen the worker hold anything.
//!
//! The bound is asserted from the broker's own unacked count, not only
//! from a channel surviving: RabbitMQ 3.10.8 here did not enforce a
//! `consumer_timeout` set at runtime (a channel holding one delivery
//! unacked for 150 s with a 5 s timeout stayed open), so a survived
//! channel alone would prove nothing.
//!
//! Only test in this binary: `consumer_timeout` is broker-wide, and cargo
//! runs test binaries one after another.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use e2e::{Fleet, OPENCV_DATA, env, rabbitmqctl};

const TASK: &str = "embed.effnet-lite0";
const TIMEOUT_MS: u64 = 20_000;
/// Copies of vtest.avi, 50 jobs of 8 frames each: all 250 fit in the
/// frames queue (256 jobs, `fleet/src/topology.rs`) before the worker
/// starts.
const COPIES: usize = 5;

/// Lowers the broker's `consumer_timeout` for channels opened from now
/// on, and puts the previous value back on drop.
struct ConsumerTimeout {
    previous: String,
}

impl ConsumerTimeout {
    fn lower(ms: u64) -> anyhow::Result<Self> {
        let previous = rabbitmqctl(&["eval", "application:get_env(rabbit, consumer_timeout)."])?
            .trim()
            .to_owned();
        rabbitmqctl(&[
            "eval",
            &format!("application:set_env(rabbit, consumer_timeout, {ms})."),
        ])?;
        Ok(Self { previous })
    }
}

impl Drop for ConsumerTimeout {
    fn drop(&mut self) {
        let restore = match self
            .previous
            .strip_prefix("{ok,")
            .and_then(|v| v.strip_suffix('}'))
        {
            Some(value) => format!("application:set_env(rabbit, consumer_timeout, {value})."),
            None => "application:unset_env(rabbit, consumer_timeout).".to_owned(),
        };
        rabbitmqctl(&["eval", &restore]).ok();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_worker_never_trips_the_ack_timeout() -> anyhow::Result<()> {
    let _timeout = ConsumerTimeout::lower(TIMEOUT_MS)?;
    let mut fleet = Fleet::new("acktimeout").await?;
    let video = Path::new(OPENCV_DATA).join("vtest.avi");
    let keys: Vec<String> = (0..COPIES).map(|i| format!("in/vtest-{i}.avi")).collect();
    for key in &keys {
        fleet.upload(key, &video).await?;
    }
    let model = env("FF_TEST_MODEL_DIR")?;
    fleet.spawn("producer", "producer", &["run", "--job-frames", "8"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    let bucket = fleet.bucket.clone();
    fleet.run(
        "producer",
        &[
            "submit",
            &format!("s3://{bucket}/in/"),
            "--task",
            TASK,
            "--sample",
            "every=2",
        ],
    )?;
    // Every job is queued before the worker starts: a worker that took all
    // 64 it may hold would sit on the last for far longer than 20 s.
    let deadline = Instant::now() + Duration::from_secs(300);
    while fleet.log_lines("producer", &["video published"]) < COPIES {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not all published:\n{}",
            fleet.log("producer")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let timeout = format!("{}s", TIMEOUT_MS / 1000);
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
            "64",
            "--ack-timeout",
            &timeout,
        ],
    )?;

    // The most jobs the worker held at once, as the broker counts them.
    let frames_queue = format!("frames.{TASK}");
    let mut held = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut finished = 0;
    while finished < COPIES {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not done:\n{}",
            fleet.log("worker")
        );
        held = held.max(fleet.unacked(&frames_queue)?);
        tokio::time::sleep(Duration::from_millis(100)).await;
        finished = 0;
        for key in &keys {
            let status = format!("outputs/status/{key}.json");
            finished += usize::from(fleet.get(&status).await?.is_some());
        }
    }
    let ids: Vec<&str> = keys.iter().map(String::as_str).collect();
    let status = fleet.wait_for_status(&ids, Duration::from_secs(1)).await?;
    for (key, status) in ids.iter().zip(&status) {
        assert_eq!(status["state"], "done", "{key}: {status}");
        assert_eq!(
            fleet.embedded_frames(key).await?,
            (0..795).step_by(2).collect::<Vec<u64>>(),
            "{key}: every sampled frame exactly once, in order"
        );
    }
    let worker = fleet.log("worker");
    assert!(
        worker.contains("prefetch fitted to the ack timeout"),
        "the worker fitted its prefetch:\n{worker}"
    );
    assert!(
        !worker.contains("consumer error") && !worker.contains("channel closed"),
        "the broker closed the worker's channel:\n{worker}"
    );
    // Held jobs × 8 frames at the speed the model ran must fit in half the
    // timeout (50% slack for timing noise); taking all 50 jobs at once
    // would need about 25 s on the slowest machine this ran on.
    let frames = status[0]["frames"].as_f64().unwrap_or_default();
    let per_frame_s = status[0]["timings"]["compute_ms"]
        .as_f64()
        .unwrap_or_default()
        / 1000.0
        / frames;
    let wait_s = held as f64 * 8.0 * per_frame_s;
    eprintln!("held at most {held} jobs: {wait_s:.1} s of work at {per_frame_s:.3} s/frame");
    assert!(
        held >= 2,
        "the worker grew its prefetch once measured: held {held}"
    );
    assert!(
        wait_s <= TIMEOUT_MS as f64 / 1000.0 / 2.0 * 1.5,
        "held {held} jobs, {wait_s:.1} s of work, against a {TIMEOUT_MS} ms ack timeout"
    );
    assert_eq!(fleet.ready("dead")?, 0, "dead letters");
    fleet.cleanup(&[TASK]).await
}
