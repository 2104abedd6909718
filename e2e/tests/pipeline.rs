//! One video travels bucket → RabbitMQ → worker → bucket, for real.

use std::{path::Path, process::Command, time::Duration};

use e2e::{Fleet, OPENCV_DATA, env, ffmpeg, ffprobe_frames, numpy_shape, read_npy_f32};
use serde_json::Value;

const TASK: &str = "embed.effnet-lite0";
const PHOTOS: &[(&str, &str)] = &[
    ("orange.jpg", "orange"),
    ("squirrel_cls.jpg", "fox squirrel"),
];
const FRAMES_PER_PHOTO: u64 = 5;

fn make_videos(dir: &Path) -> anyhow::Result<()> {
    let synthetic = dir.join("synthetic.mp4");
    let synthetic_path = synthetic.to_string_lossy();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        &synthetic_path,
    ])?;
    // Each photo held for FRAMES_PER_PHOTO frames at 5 fps, in order.
    let mut args: Vec<String> = Vec::new();
    for (photo, _) in PHOTOS {
        args.extend(["-loop", "1", "-framerate", "5", "-t", "1", "-i"].map(String::from));
        args.push(format!("{OPENCV_DATA}/{photo}"));
    }
    let filters: Vec<String> = (0..PHOTOS.len())
        .map(|i| format!("[{i}:v]scale=448:448,setsar=1,format=yuv420p[v{i}]"))
        .collect();
    let inputs: String = (0..PHOTOS.len()).map(|i| format!("[v{i}]")).collect();
    let graph = format!(
        "{};{inputs}concat=n={}:v=1:a=0[out]",
        filters.join(";"),
        PHOTOS.len()
    );
    args.extend(
        [
            "-filter_complex",
            &graph,
            "-map",
            "[out]",
            "-c:v",
            "libx264",
            "-r",
            "5",
        ]
        .map(String::from),
    );
    args.push(dir.join("photos.mp4").to_string_lossy().into_owned());
    ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    // A truncated MP4: a real header, no index.
    let real = std::fs::read(&synthetic)?;
    std::fs::write(dir.join("corrupt.mp4"), &real[..real.len().min(2048)])?;
    std::fs::write(dir.join("notes.txt"), "not a video\n")?;
    // A WebM cut to its first third: it decodes, but not all of it.
    let webm = dir.join("full.webm");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-t",
        "3",
        "-c:v",
        "libvpx-vp9",
        "-b:v",
        "200k",
        &webm.to_string_lossy(),
    ])?;
    let full = std::fs::read(&webm)?;
    std::fs::write(dir.join("cut.webm"), &full[..full.len() / 3])?;
    Ok(())
}

/// Positions, in presentation order, of the frames ffprobe reports as I
/// pictures.
fn intra_positions(path: &Path) -> anyhow::Result<Vec<u64>> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "frame=pict_type", "-of", "csv=p=0"])
        .arg(path)
        .output()?;
    anyhow::ensure!(out.status.success(), "ffprobe {}", path.display());
    Ok(String::from_utf8(out.stdout)?
        .lines()
        // ffprobe adds a blank line for a frame's side data.
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .filter(|(_, t)| t.trim().trim_end_matches(',') == "I")
        .map(|(i, _)| i as u64)
        .collect())
}

fn frames_json(bytes: &[u8]) -> anyhow::Result<Vec<Value>> {
    let v: Value = serde_json::from_slice(bytes)?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

async fn check_video(fleet: &Fleet, key: &str, expected_frames: u64) -> anyhow::Result<Vec<Value>> {
    let npy = fleet
        .get(&format!("outputs/embeddings/{key}.npy"))
        .await?
        .expect("npy written");
    let (rows, cols, data) = read_npy_f32(&npy)?;
    assert_eq!(
        (rows as u64, cols),
        (expected_frames, 1280),
        "{key}: embedding matrix shape"
    );
    assert!(
        data.iter().all(|v| v.is_finite()),
        "{key}: embeddings are finite"
    );
    let local = fleet.work.join(key.replace('/', "_") + ".npy");
    std::fs::write(&local, &npy)?;
    assert_eq!(
        numpy_shape(&local)?,
        format!("float32 ({expected_frames}, 1280)"),
        "{key}: numpy reads it"
    );

    let frames = frames_json(
        &fleet
            .get(&format!("outputs/embeddings/{key}.frames.json"))
            .await?
            .expect("frames written"),
    )?;
    assert_eq!(
        frames.len() as u64,
        expected_frames,
        "{key}: one frames.json entry per frame"
    );
    let pts: Vec<f64> = frames
        .iter()
        .map(|f| f["pts_s"].as_f64().expect("pts"))
        .collect();
    assert!(
        pts.windows(2).all(|w| w[1] > w[0]),
        "{key}: pts strictly increase: {pts:?}"
    );
    let index: Vec<u64> = frames
        .iter()
        .map(|f| f["index"].as_u64().expect("index"))
        .collect();
    assert!(
        index.windows(2).all(|w| w[1] > w[0]),
        "{key}: frame indices strictly increase, no duplicates"
    );
    assert!(
        frames
            .iter()
            .all(|f| f["labels"].as_array().map(Vec::len) == Some(5)),
        "{key}: top-5 labels per frame"
    );
    Ok(frames)
}

#[tokio::test(flavor = "multi_thread")]
async fn videos_become_embeddings_and_failures_become_reasons() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("pipeline").await?;
    let dir = fleet.work.clone();
    make_videos(&dir)?;
    fleet
        .upload("in/synthetic.mp4", &dir.join("synthetic.mp4"))
        .await?;
    fleet
        .upload("in/photos.mp4", &dir.join("photos.mp4"))
        .await?;
    fleet
        .upload("in/corrupt.mp4", &dir.join("corrupt.mp4"))
        .await?;
    fleet.upload("in/notes.txt", &dir.join("notes.txt")).await?;
    fleet.upload("in/cut.webm", &dir.join("cut.webm")).await?;
    fleet
        .upload(
            "vtest/vtest.avi",
            Path::new(OPENCV_DATA).join("vtest.avi").as_path(),
        )
        .await?;
    fleet
        .upload(
            "keyframes/vtest.avi",
            Path::new(OPENCV_DATA).join("vtest.avi").as_path(),
        )
        .await?;

    let model = env("FF_TEST_MODEL_DIR")?;
    fleet.spawn("producer", "producer", &["run", "--job-frames", "16"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    fleet.spawn(
        "worker",
        "worker",
        &["--task", TASK, "--device", "cpu", "--model-dir", &model],
    )?;
    let bucket = fleet.bucket.clone();
    let out = fleet.run(
        "producer",
        &["submit", &format!("s3://{bucket}/in/"), "--task", TASK],
    )?;
    assert!(out.contains("5 videos submitted"), "{out}");
    fleet.run(
        "producer",
        &[
            "submit",
            &format!("s3://{bucket}/vtest/"),
            "--task",
            TASK,
            "--sample",
            "every=10",
        ],
    )?;
    fleet.run(
        "producer",
        &[
            "submit",
            &format!("s3://{bucket}/keyframes/"),
            "--task",
            TASK,
            "--sample",
            "keyframes",
        ],
    )?;

    let keys = [
        "in/synthetic.mp4",
        "in/photos.mp4",
        "in/corrupt.mp4",
        "in/notes.txt",
        "vtest/vtest.avi",
        "in/cut.webm",
        "keyframes/vtest.avi",
    ];
    let status = fleet
        .wait_for_status(&keys, Duration::from_secs(600))
        .await?;
    let state = |i: usize| status[i]["state"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        (state(0), state(1), state(4)),
        ("done".into(), "done".into(), "done".into()),
        "{status:#?}"
    );
    for (i, key) in [(2, "in/corrupt.mp4"), (3, "in/notes.txt")] {
        assert_eq!(state(i), "failed", "{key}");
        let error = status[i]["error"].as_str().unwrap_or_default();
        assert!(error.contains(key), "the reason names the object: {error}");
        assert!(error.len() > key.len() + 10, "the reason says why: {error}");
    }

    // Cut short: outputs for what decoded, and a state that says so.
    assert_eq!(state(5), "incomplete", "{:#}", status[5]);
    let error = status[5]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("truncated: frames cover") && error.contains("of the 3.000 s"),
        "{error}"
    );
    assert_eq!(status[5]["coverage"]["declared_s"], 3.0);
    let cut_frames = status[5]["frames"].as_u64().unwrap_or_default();
    assert!(cut_frames > 0 && cut_frames < 75, "{cut_frames}");
    check_video(&fleet, "in/cut.webm", cut_frames).await?;

    let synthetic = ffprobe_frames(&dir.join("synthetic.mp4"))?;
    assert_eq!(synthetic, 50);
    check_video(&fleet, "in/synthetic.mp4", synthetic).await?;
    let vtest = ffprobe_frames(&Path::new(OPENCV_DATA).join("vtest.avi"))?;
    check_video(&fleet, "vtest/vtest.avi", vtest.div_ceil(10)).await?;
    assert_eq!(
        status[4]["decoded"].as_u64(),
        Some(vtest),
        "every vtest frame decoded"
    );
    // Keyframes only: the I pictures at their positions, the rest never
    // decoded, and the video still complete.
    let intra = intra_positions(&Path::new(OPENCV_DATA).join("vtest.avi"))?;
    assert_eq!(state(6), "done", "{:#}", status[6]);
    let keyframes = check_video(&fleet, "keyframes/vtest.avi", intra.len() as u64).await?;
    let positions: Vec<u64> = keyframes
        .iter()
        .map(|f| f["index"].as_u64().unwrap_or(u64::MAX))
        .collect();
    assert_eq!(positions, intra);
    let decoded = status[6]["decoded"].as_u64().unwrap_or(u64::MAX);
    assert!(decoded < vtest / 10, "decoded {decoded} of {vtest} frames");

    let photos = check_video(
        &fleet,
        "in/photos.mp4",
        ffprobe_frames(&dir.join("photos.mp4"))?,
    )
    .await?;
    assert_eq!(photos.len() as u64, FRAMES_PER_PHOTO * PHOTOS.len() as u64);
    for (i, frame) in photos.iter().enumerate() {
        let (photo, class) = PHOTOS[i / FRAMES_PER_PHOTO as usize];
        let top1 = frame["labels"][0]["name"].as_str().unwrap_or_default();
        assert_eq!(
            top1.split(',').next(),
            Some(class),
            "frame {i} of {photo}: top-5 {}",
            frame["labels"]
        );
    }
    // Nothing left behind but outputs.
    assert!(
        fleet.keys("outputs/.framefleet/").await?.is_empty(),
        "parts are cleaned up"
    );
    fleet.cleanup(&[TASK]).await
}
