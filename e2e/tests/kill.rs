//! Fault 3: SIGKILL, no chance to clean up. The collector killed
//! mid-assembly leaves its parts and the unacked done marker; a new
//! collector assembles again from the start. The producer killed mid-video
//! leaves its task unacked; it is redelivered, decoded again, and its jobs
//! overwrite the first attempt's under the same seqs. Either way the video
//! ends `done` with every frame exactly once and no parts left behind. A
//! collector stopped between writing a status and deleting the parts
//! leaves them behind; the redelivered message clears them.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use e2e::{Fleet, OPENCV_DATA, env, ffprobe_frames};
use fleet::{
    layout::{Layout, part_key},
    status::{State, Status, now_unix_ms},
    store,
};
use schema::{Frame, FrameResult, Message, ObjectRef};
use uuid::Uuid;

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
    // The parts go right after the status is written: give that moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = fleet.keys("outputs/.framefleet/parts/").await?;
        if left.is_empty() {
            return Ok(());
        }
        assert!(Instant::now() < deadline, "parts left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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

#[tokio::test(flavor = "multi_thread")]
async fn parts_left_after_the_status_go_with_the_redelivery() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("orphans").await?;
    let video_id = Uuid::new_v4();
    let (bucket, s3) = (fleet.bucket.clone(), fleet.s3.clone());
    let source = ObjectRef {
        bucket: bucket.clone(),
        key: VIDEO.into(),
    };
    let output = ObjectRef {
        bucket: bucket.clone(),
        key: "outputs/".into(),
    };
    // What a collector stopped right after writing the status leaves: the
    // run's status, and its parts.
    let status = Status {
        state: State::Done,
        video_id,
        source: source.to_string(),
        task: TASK.into(),
        model: None,
        frames: 3,
        decoded: 3,
        jobs: 3,
        error: None,
        coverage: None,
        timings: Default::default(),
        outputs: Vec::new(),
        etag: None,
        fingerprint: None,
        finished_at_unix_ms: now_unix_ms(),
    };
    let layout = Layout {
        output: &output,
        source_key: VIDEO,
    };
    let status = serde_json::to_vec(&status)?;
    store::put(
        &s3,
        &bucket,
        &layout.status(),
        status.clone(),
        "application/json",
    )
    .await?;
    let result = |seq: u32| FrameResult {
        video_id,
        task: TASK.into(),
        source: source.clone(),
        output: output.clone(),
        seq,
        frames: vec![Frame {
            index: seq.into(),
            pts_s: f64::from(seq) / 25.0,
        }],
        model: "test".into(),
        dim: 2,
        embeddings: vec![0.5, 0.25],
        labels: Vec::new(),
        captions: Vec::new(),
        compute_ms: 1,
        heads: Vec::new(),
    };
    for seq in 0..3 {
        let part = schema::encode(&Message::FrameResult(result(seq)))?;
        store::put(
            &s3,
            &bucket,
            &part_key(&output, video_id, seq),
            part,
            "application/x-framefleet",
        )
        .await?;
    }
    assert_eq!(fleet.keys("outputs/.framefleet/parts/").await?.len(), 3);

    fleet.spawn("collector", "producer", &["collect"])?;
    // Its results queue exists once it consumes.
    fleet
        .wait_for_log(
            "collector",
            &["collecting results"],
            Duration::from_secs(30),
        )
        .await?;
    fleet
        .publish_raw(
            fleet::Topology::RESULTS_KEY,
            &schema::encode(&Message::FrameResult(result(1)))?,
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fleet.keys("outputs/.framefleet/parts/").await?.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "parts still there:\n{}",
            fleet.log("collector")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        fleet.get(&layout.status()).await?,
        Some(status),
        "the status stays as it was"
    );
    fleet.cleanup(&[TASK]).await
}
