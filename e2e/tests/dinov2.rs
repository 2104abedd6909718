//! A centre-crop task through the whole fleet: `embed.dinov2-small` on the
//! tiny DINOv2 fixture. The video is black with a white band in the middle,
//! wider than the processor's centre crop, so the producer's crop sees
//! white only: every frame's embedding must be the embedding of an all-white
//! input (`worker embed` on a white PNG), and far from that of the whole
//! frame stretched, which is what the fleet sent before tasks had a fit.

use std::{path::Path, time::Duration};

use e2e::{Fleet, ffmpeg, read_npy_f32};
use serde_json::Value;

const TASK: &str = "embed.dinov2-small";
const FRAMES: usize = 10;

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../worker/tests/fixtures/dinov2-tiny")
        .to_string_lossy()
        .into_owned()
}

/// `worker embed` on one image: its embedding.
fn embed(fleet: &Fleet, image: &Path) -> anyhow::Result<Vec<f32>> {
    let out = fleet.run(
        "worker",
        &[
            "embed",
            "--model-dir",
            &fixture(),
            "--task",
            TASK,
            &image.to_string_lossy(),
        ],
    )?;
    let line: Value = serde_json::from_str(out.trim())?;
    Ok(serde_json::from_value(line["embedding"].clone())?)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_feeds_dinov2_the_processors_centre_crop() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("dinov2").await?;
    let dir = fleet.work.clone();
    // 640x360 -> 455x256 -> centre 224²: source columns 163 to 477. The
    // band covers 120 to 520, the whole height.
    let band = "color=black:size=640x360:rate=10,drawbox=x=120:y=0:w=400:h=360:color=white:t=fill";
    let video = dir.join("band.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        band,
        "-frames:v",
        &FRAMES.to_string(),
        "-c:v",
        "libx264",
        "-qp",
        "0",
        "-pix_fmt",
        "yuv444p",
        &video.to_string_lossy(),
    ])?;
    // The whole frame squeezed to the input, as a stretch would send it.
    let squeezed = dir.join("squeezed.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("{band},scale=224:224"),
        "-frames:v",
        "1",
        &squeezed.to_string_lossy(),
    ])?;
    let white = dir.join("white.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=white:size=224x224",
        "-frames:v",
        "1",
        &white.to_string_lossy(),
    ])?;
    fleet.upload("in/band.mp4", &video).await?;

    fleet.spawn("producer", "producer", &["run"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    fleet.spawn(
        "worker",
        "worker",
        &["--task", TASK, "--model-dir", &fixture()],
    )?;
    let bucket = fleet.bucket.clone();
    fleet.run(
        "producer",
        &["submit", &format!("s3://{bucket}/in/"), "--task", TASK],
    )?;
    let status = fleet
        .wait_for_status(&["in/band.mp4"], Duration::from_secs(300))
        .await?;
    assert_eq!(status[0]["state"], "done", "{}", status[0]);
    assert_eq!(
        fleet.embedded_frames("in/band.mp4").await?,
        (0..FRAMES as u64).collect::<Vec<_>>()
    );

    let npy = fleet
        .get("outputs/embeddings/in/band.mp4.npy")
        .await?
        .expect("embeddings");
    let (rows, dim, values) = read_npy_f32(&npy)?;
    assert_eq!((rows, dim), (FRAMES, 32));
    let all_white = embed(&fleet, &white)?;
    let stretched = embed(&fleet, &squeezed)?;
    // The squeezed frame is a different input altogether (black sides even
    // after `worker embed`'s own crop); the fleet's crop is white to within
    // colour conversion.
    assert!(
        max_abs_diff(&stretched, &all_white) > 0.5,
        "the fixture cannot tell a crop from a stretch"
    );
    for (i, row) in values.chunks(dim).enumerate() {
        let diff = max_abs_diff(row, &all_white);
        assert!(diff < 0.05, "frame {i} is not the white centre: {diff}");
    }
    fleet.cleanup(&[TASK]).await?;
    Ok(())
}
