//! The fleet's own ceiling, in one run: frames/s through producer →
//! RabbitMQ → N null workers (`embed.null*`: zero embeddings, no compute)
//! → collector, for N = 1, 2, 4 at 224² and 384², beside the broker's raw
//! rate for messages of the same size (publish with confirms, four in
//! flight as the producer does, consume with acks, same queue and type).
//! Run: `scripts/bench_fleet.sh`.

use std::time::{Duration, Instant};

use e2e::{Fleet, ffmpeg};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use tokio::task::JoinSet;

/// 60 s of 640x360 at 25 fps: 1,500 frames, every one sampled.
const FRAMES: u64 = 1500;
const JOB_FRAMES: u64 = 32;
const JOB_BYTES: u64 = 8 * 1024 * 1024;

fn frames_per_job(side: u64) -> u64 {
    JOB_FRAMES.min(JOB_BYTES / (side * side * 3))
}

/// Frames/s the broker alone carries in jobs of this size.
async fn raw(side: u64, task: &str) -> anyhow::Result<f64> {
    let fleet = Fleet::new("raw").await?;
    let connection = fleet.connect("bench raw").await?;
    let topology = fleet::Topology::new(&fleet.namespace);
    let publisher = fleet::Publisher::open(&connection, &topology.jobs_exchange()).await?;
    topology.declare_core(publisher.channel()).await?;
    topology.declare_frames(publisher.channel(), task).await?;
    let per_job = frames_per_job(side);
    let jobs = FRAMES.div_ceil(per_job);
    let payload = vec![7u8; (per_job * side * side * 3) as usize + 256];
    let consumer_channel = connection.create_channel().await?;
    consumer_channel
        .basic_qos(8, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            topology.frames_queue(task).as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await?;
    let started = Instant::now();
    let consuming = tokio::spawn(async move {
        for _ in 0..jobs {
            let delivery = consumer
                .next()
                .await
                .ok_or_else(|| anyhow::anyhow!("consumer ended"))??;
            delivery.ack(BasicAckOptions::default()).await?;
        }
        Ok::<_, anyhow::Error>(())
    });
    let mut pending = JoinSet::new();
    for _ in 0..jobs {
        while pending.len() >= 4 {
            pending.join_next().await.expect("non-empty")??;
        }
        let (publisher, payload) = (publisher.clone(), payload.clone());
        let key = fleet::Topology::frames_key(task).to_owned();
        pending.spawn(async move { publisher.publish(&key, &payload, Default::default()).await });
    }
    while let Some(done) = pending.join_next().await {
        done??;
    }
    consuming.await??;
    let fps = (jobs * per_job) as f64 / started.elapsed().as_secs_f64();
    fleet.cleanup(&[task]).await?;
    Ok(fps)
}

/// Frames/s from submit to the status object, with `workers` null
/// workers, and the producer's decode time in seconds.
async fn through_fleet(
    task: &str,
    workers: usize,
    video: &std::path::Path,
) -> anyhow::Result<(f64, f64)> {
    let mut fleet = Fleet::new("ceiling").await?;
    fleet.spawn("producer", "producer", &["run"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    for w in 0..workers {
        fleet.spawn(
            &format!("worker{w}"),
            "worker",
            &["--task", task, "--max-batch", "32"],
        )?;
    }
    fleet.upload("in/video.mp4", video).await?;
    // Everything declared and consuming before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bucket = fleet.bucket.clone();
    let started = Instant::now();
    fleet.run(
        "producer",
        &["submit", &format!("s3://{bucket}/in/"), "--task", task],
    )?;
    let status = fleet
        .wait_for_status(&["in/video.mp4"], Duration::from_secs(900))
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(status[0]["frames"] == FRAMES, "{}", status[0]);
    let decode_s = status[0]["timings"]["decode_ms"]
        .as_f64()
        .unwrap_or(f64::NAN)
        / 1000.0;
    fleet.cleanup(&[task]).await?;
    Ok((FRAMES as f64 / seconds, decode_s))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let video = std::env::temp_dir().join("ff-ceiling-640x360.mp4");
    if !video.exists() {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-t",
            "60",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            &video.to_string_lossy(),
        ])?;
    }
    println!(
        "| input | frames/job | broker raw, frames/s | N | fleet, frames/s | fleet / raw | producer decode, s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (side, task) in [(224u64, "embed.null"), (384, "embed.null-384")] {
        let raw = raw(side, task).await?;
        for workers in [1, 2, 4] {
            let (fps, decode_s) = through_fleet(task, workers, &video).await?;
            println!(
                "| {side}² | {} | {raw:.0} | {workers} | {fps:.0} | {:.2} | {decode_s:.1} |",
                frames_per_job(side),
                fps / raw
            );
        }
    }
    Ok(())
}
