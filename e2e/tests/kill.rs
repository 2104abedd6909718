//! Fault 3: SIGKILL, no chance to clean up. The collector killed
//! mid-assembly leaves its parts and the unacked done marker; a new
//! collector assembles again from the start. The producer killed mid-video
//! leaves its task unacked; it is redelivered, decoded again, and its jobs
//! overwrite the first attempt's under the same seqs. Either way the video
//! ends `done` with every frame exactly once and no parts left behind.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use e2e::{Fleet, OPENCV_DATA, env, ffprobe_frames};

const TASK: &str = "embed.effnet-lite0";
const VIDEO: &str = "in/vtest.avi";

fn worker(fleet: &mut Fleet, label: &str) -> anyhow::Result<()> {
    let model = env("FF_TEST_MODEL_DIR")?;
    fleet.spawn(
        label,
        "worker",
        &[
            "--task",
            TASK,
            "--model-dir",
            &model,
            "--max-batch",
            "16",
            "--prefetch",
            "16",
        ],
    )
}

async fn submit(fleet: &Fleet, sample: &str) -> anyhow::Result<()> {
    let video = Path::new(OPENCV_DATA).join("vtest.avi");
    fleet.upload(VIDEO, &video).await?;
    let source = format!("s3://{}/in/", fleet.bucket);
    fleet.run(
        "producer",
        &["submit", &source, "--task", TASK, "--sample", sample],
    )?;
    Ok(())
}

/// The video is done, every sampled frame is there once, in order, and
/// the collector deleted its parts.
async fn assert_exactly_once(fleet: &Fleet, step: u64) -> anyhow::Result<()> {
    let status = fleet
        .wait_for_status(&[VIDEO], Duration::from_secs(600))
        .await?;
    assert_eq!(status[0]["state"], "done", "{}", status[0]);
    let frames = ffprobe_frames(&Path::new(OPENCV_DATA).join("vtest.avi"))?;
    assert_eq!(
        fleet.embedded_frames(VIDEO).await?,
        (0..frames).step_by(step as usize).collect::<Vec<_>>(),
        "every sampled frame exactly once, in order"
    );
    assert_eq!(
        fleet.keys("outputs/.framefleet/parts/").await?,
        Vec::<String>::new(),
        "parts left behind"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_killed_mid_assembly_assembles_again() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("killcollect").await?;
    // One frame per job: hundreds of parts, so the assembly takes long
    // enough to be interrupted.
    fleet.spawn("producer", "producer", &["run", "--job-frames", "1"])?;
    fleet.spawn("collector1", "producer", &["collect"])?;
    worker(&mut fleet, "worker")?;
    submit(&fleet, "every=2").await?;

    let deadline = Instant::now() + Duration::from_secs(600);
    while fleet.log_lines("collector1", &["assembling outputs"]) == 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "never assembled:\n{}",
            fleet.log("collector1")
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fleet.kill("collector1")?;
    assert!(
        fleet
            .get(&format!("outputs/status/{VIDEO}.json"))
            .await?
            .is_none(),
        "the collector was killed before it finished assembling"
    );
    fleet.spawn("collector2", "producer", &["collect"])?;
    assert_exactly_once(&fleet, 2).await?;
    fleet.cleanup(&[TASK]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_producer_killed_mid_video_is_decoded_again_without_duplicates() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("killproduce").await?;
    // The frames queue holds 256 jobs; one frame per job keeps the producer
    // mid-video, held back by the full queue, until the worker catches up.
    fleet.spawn("producer1", "producer", &["run", "--job-frames", "1"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    submit(&fleet, "every=1").await?;

    let frames_queue = format!("frames.{TASK}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while fleet.ready(&frames_queue).unwrap_or(0) < 100 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the producer never published:\n{}",
            fleet.log("producer1")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fleet.kill("producer1")?;
    let published = fleet.ready(&frames_queue)?;
    assert!(published < 795, "killed mid-video, {published} jobs in");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.ready("videos")? != 1 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the task never went back to its queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    fleet.spawn("producer2", "producer", &["run", "--job-frames", "1"])?;
    worker(&mut fleet, "worker")?;
    assert_exactly_once(&fleet, 1).await?;
    fleet.cleanup(&[TASK]).await
}
