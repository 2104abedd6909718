//! Encode once, answer many questions, on real data: EfficientNet-Lite0's
//! real ImageNet weights encode videos of random crops of real photos; a
//! head trained on those embeddings alone tells which photo held-out
//! videos (other crops) come from; the same head then runs offline over
//! the bucket and inside the fleet, with the same answers.
//!
//! The task: 4 photos (baboon, fruits, building, butterfly), 3 videos of
//! each, 16 frames a video, every frame a different 55% crop of its photo
//! with brightness and saturation jitter, every other video mirrored.
//! Labels name the photo per video; whole videos are held out, so every
//! validation frame is a crop the head never saw.

use std::{collections::BTreeMap, path::Path, time::Duration};

use e2e::{Fleet, OPENCV_DATA, env, ffmpeg};
use serde_json::Value;

const TASK: &str = "embed.effnet-lite0";
const PHOTOS: [&str; 4] = ["baboon", "fruits", "building", "butterfly"];
const VIDEOS_PER_PHOTO: u32 = 3;
const FRAMES: usize = 16;

/// A video of `FRAMES` crops of `photo`; `seed` picks the crops.
fn crops(photo: &str, seed: u32, out: &Path) -> anyhow::Result<()> {
    let s = f64::from(seed);
    let mut filter = format!(
        "scale=640:480,setsar=1,\
         crop=w=352:h=264:x='(iw-ow)*(0.5+0.5*sin(n*1.7+{s}))':y='(ih-oh)*(0.5+0.5*cos(n*2.3+{}))',\
         eq=brightness='0.08*sin(n+{s})':saturation='1+0.25*cos(0.7*n+{s})':eval=frame",
        s * 3.0
    );
    if seed % 2 == 1 {
        filter += ",hflip";
    }
    ffmpeg(&[
        "-loop",
        "1",
        "-framerate",
        "8",
        "-t",
        "2",
        "-i",
        &format!("{OPENCV_DATA}/{photo}.jpg"),
        "-vf",
        &filter,
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        &out.to_string_lossy(),
    ])
}

fn jsonl(bytes: &[u8]) -> anyhow::Result<Vec<Value>> {
    std::str::from_utf8(bytes)?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_trained_on_stored_embeddings_answers_offline_and_in_the_fleet() -> anyhow::Result<()>
{
    let mut fleet = Fleet::new("heads").await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    let bucket = fleet.bucket.clone();
    let outputs = format!("s3://{bucket}/outputs/");
    fleet.spawn("producer", "producer", &["run"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    fleet.spawn("worker", "worker", &["--task", TASK, "--model-dir", &model])?;

    // Encode once.
    let mut keys = Vec::new();
    let mut labels = String::from("video,start_s,end_s,label\n");
    for (p, photo) in PHOTOS.iter().enumerate() {
        for k in 0..VIDEOS_PER_PHOTO {
            let key = format!("in/{photo}-{k}.mp4");
            let file = fleet.work.join(format!("{photo}-{k}.mp4"));
            crops(photo, p as u32 * 10 + k, &file)?;
            fleet.upload(&key, &file).await?;
            labels += &format!("{key},0,3600,{photo}\n");
            keys.push(key);
        }
    }
    let labels_file = fleet.work.join("labels.csv");
    std::fs::write(&labels_file, &labels)?;
    fleet.run(
        "producer",
        &["submit", &format!("s3://{bucket}/in/"), "--task", TASK],
    )?;
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    for status in fleet
        .wait_for_status(&keys, Duration::from_secs(600))
        .await?
    {
        anyhow::ensure!(status["state"] == "done", "{status}");
    }

    // Train on the stored embeddings alone.
    let head_dir = fleet.work.join("head-photo");
    let head = head_dir.to_string_lossy().into_owned();
    let train = |seed: &str, out: &str| {
        fleet.run(
            "worker",
            &[
                "head",
                "train",
                "--embeddings",
                &outputs,
                "--labels",
                &labels_file.to_string_lossy(),
                "--name",
                "photo",
                "--out",
                out,
                "--validation-fraction",
                "0.25",
                "--seed",
                seed,
            ],
        )
    };
    let printed = train("3", &head)?;
    let spec: Value = serde_json::from_slice(&std::fs::read(head_dir.join("head.json"))?)?;
    let accuracy = spec["validation"]["accuracy"].as_f64().unwrap_or(0.0);
    eprintln!("{printed}");
    assert!(
        accuracy >= 0.9,
        "validation accuracy {accuracy} on held-out videos (chance 0.25)\n{printed}"
    );
    assert_eq!(spec["training"]["validation_videos"], 3);
    assert_eq!(spec["training"]["validation_rows"], 3 * FRAMES);
    assert_eq!(spec["encoder"]["task"], TASK);
    assert_eq!(spec["encoder"]["dim"], 1280);
    assert!(printed.contains("validation accuracy"), "{printed}");
    // Same inputs, same seed: the same head, byte for byte; this time
    // written to the bucket, where the offline run below reads it.
    let in_bucket = format!("s3://{bucket}/heads/photo/");
    train("3", &in_bucket)?;
    for file in ["head.safetensors", "head.json"] {
        assert_eq!(
            std::fs::read(head_dir.join(file))?,
            fleet
                .get(&format!("heads/photo/{file}"))
                .await?
                .ok_or_else(|| anyhow::anyhow!("no {file} in the bucket"))?,
            "{file}"
        );
    }

    // Labels that contradict each other are refused by line; one that
    // matches no sampled frame is only counted.
    let conflicting = fleet.work.join("conflicting.csv");
    std::fs::write(
        &conflicting,
        format!("{labels}in/baboon-0.mp4,0.5,1.0,fruits\n"),
    )?;
    let refused = fleet.output(
        "worker",
        &[
            "head",
            "train",
            "--embeddings",
            &outputs,
            "--labels",
            &conflicting.to_string_lossy(),
            "--name",
            "photo",
            "--out",
            &fleet.work.join("head-conflict").to_string_lossy(),
        ],
        &[],
    )?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("labelled twice, differently (lines 2 and 14)"),
        "{stderr}"
    );
    let unmatched = fleet.work.join("unmatched.csv");
    std::fs::write(
        &unmatched,
        format!("{labels}in/fruits-1.mp4,9.0,9.5,fruits\n"),
    )?;
    let trained = fleet.output(
        "worker",
        &[
            "head",
            "train",
            "--embeddings",
            &outputs,
            "--labels",
            &unmatched.to_string_lossy(),
            "--name",
            "photo",
            "--out",
            &fleet.work.join("head-unmatched").to_string_lossy(),
        ],
        &[],
    )?;
    let stderr = String::from_utf8_lossy(&trained.stderr);
    assert!(trained.status.success(), "{stderr}");
    assert!(
        stderr.contains("labels that match no sampled frame"),
        "{stderr}"
    );

    // Apply offline: no pixels, every stored video answered.
    let report = fleet.run(
        "worker",
        &["head", "apply", "--embeddings", &outputs, "--head", &head],
    )?;
    assert!(report.contains("12 videos, 192 frames"), "{report}");
    let mut right = 0;
    for key in &keys {
        let bytes = fleet
            .get(&format!("outputs/heads/photo/{key}.jsonl"))
            .await?
            .ok_or_else(|| anyhow::anyhow!("no head output for {key}"))?;
        let lines = jsonl(&bytes)?;
        assert_eq!(lines.len(), FRAMES, "{key}");
        let truth = key
            .trim_start_matches("in/")
            .split('-')
            .next()
            .unwrap_or("");
        right += lines.iter().filter(|l| l["label"] == truth).count();
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l["index"], i as u64, "{key}: frames in order");
            assert!(
                l["score"].as_f64().is_some_and(|s| s > 0.25 && s <= 1.0),
                "{l}"
            );
        }
    }
    assert!(
        right >= keys.len() * FRAMES * 9 / 10,
        "{right} of 192 frames right"
    );

    // A head trained on another encoder is refused at start, by name.
    let foreign = fleet.work.join("head-foreign");
    std::fs::create_dir_all(&foreign)?;
    std::fs::copy(
        head_dir.join("head.safetensors"),
        foreign.join("head.safetensors"),
    )?;
    let mut other = spec.clone();
    other["encoder"]["task"] = "embed.dinov2-small".into();
    std::fs::write(foreign.join("head.json"), serde_json::to_vec(&other)?)?;
    let refused = fleet.output(
        "worker",
        &[
            "--task",
            TASK,
            "--model-dir",
            &model,
            "--head",
            &foreign.to_string_lossy(),
        ],
        &[],
    )?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("reads embed.dinov2-small embeddings"),
        "{stderr}"
    );

    // The same head inside the fleet: the worker runs it on every batch and
    // the collector writes heads/ and frames.json. Same answers as offline.
    fleet.kill("worker")?;
    fleet.spawn(
        "worker-with-head",
        "worker",
        &["--task", TASK, "--model-dir", &model, "--head", &head],
    )?;
    let fresh = fleet.work.join("fresh.mp4");
    crops("fruits", 99, &fresh)?;
    fleet.upload("new/fruits-99.mp4", &fresh).await?;
    fleet.run(
        "producer",
        &["submit", &format!("s3://{bucket}/new/"), "--task", TASK],
    )?;
    fleet
        .wait_for_status(&["new/fruits-99.mp4"], Duration::from_secs(300))
        .await?;
    let in_fleet = jsonl(
        &fleet
            .get("outputs/heads/photo/new/fruits-99.mp4.jsonl")
            .await?
            .ok_or_else(|| anyhow::anyhow!("the collector wrote no head output"))?,
    )?;
    assert_eq!(in_fleet.len(), FRAMES);
    let frames: Value = serde_json::from_slice(
        &fleet
            .get("outputs/embeddings/new/fruits-99.mp4.frames.json")
            .await?
            .ok_or_else(|| anyhow::anyhow!("no frames.json"))?,
    )?;
    for (line, frame) in in_fleet.iter().zip(frames.as_array().into_iter().flatten()) {
        assert_eq!(frame["heads"]["photo"]["label"], line["label"], "{frame}");
    }
    fleet.run(
        "worker",
        &[
            "head",
            "apply",
            "--embeddings",
            &outputs,
            "--prefix",
            "new/",
            "--head",
            &in_bucket,
        ],
    )?;
    let offline = jsonl(
        &fleet
            .get("outputs/heads/photo/new/fruits-99.mp4.jsonl")
            .await?
            .ok_or_else(|| anyhow::anyhow!("no offline head output"))?,
    )?;
    let by_index = |lines: &[Value]| -> BTreeMap<u64, (String, f64)> {
        lines
            .iter()
            .map(|l| {
                (
                    l["index"].as_u64().unwrap_or(u64::MAX),
                    (
                        l["label"].to_string(),
                        l["score"].as_f64().unwrap_or(f64::NAN),
                    ),
                )
            })
            .collect()
    };
    let (a, b) = (by_index(&in_fleet), by_index(&offline));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (i, (label, score)) in &a {
        assert_eq!(*label, b[i].0, "frame {i}");
        assert!(
            (score - b[i].1).abs() < 1e-4,
            "frame {i}: {score} vs {}",
            b[i].1
        );
    }
    fleet.cleanup(&[TASK]).await
}
