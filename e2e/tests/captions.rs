//! A real video is captioned end to end into JSONL and WebVTT, with the
//! tiny random BLIP checkpoint of worker/tests/fixtures (its captions are
//! gibberish; their shape and timing are what is checked).

use std::{path::Path, time::Duration};

use e2e::{Fleet, OPENCV_DATA, ffprobe_frames};
use serde_json::Value;

const TASK: &str = "caption.blip-base";
const EVERY: u64 = 25;
const PROMPT: &str = "a picture of";

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../worker/tests/fixtures/blip-tiny")
        .to_string_lossy()
        .into_owned()
}

fn timestamp(seconds: f64) -> String {
    let ms = (seconds * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms % 3_600_000 / 60_000,
        ms % 60_000 / 1000,
        ms % 1000
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_video_becomes_jsonl_and_webvtt_captions() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("captions").await?;
    let video = Path::new(OPENCV_DATA).join("vtest.avi");
    fleet.upload("clips/vtest.avi", &video).await?;
    fleet.spawn("producer", "producer", &["run", "--job-frames", "8"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    let model = fixture();
    fleet.spawn(
        "worker",
        "worker",
        &["--task", TASK, "--model-dir", &model, "--prompt", PROMPT],
    )?;
    let bucket = fleet.bucket.clone();
    let sample = format!("every={EVERY}");
    fleet.run(
        "producer",
        &[
            "submit",
            &format!("s3://{bucket}/clips/"),
            "--task",
            TASK,
            "--sample",
            &sample,
        ],
    )?;
    let status = fleet
        .wait_for_status(&["clips/vtest.avi"], Duration::from_secs(600))
        .await?;
    assert_eq!(status[0]["state"], "done", "{status:#?}");
    let expected = ffprobe_frames(&video)?.div_ceil(EVERY) as usize;
    let outputs: Vec<&str> = status[0]["outputs"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        outputs,
        [
            format!("s3://{bucket}/outputs/captions/clips/vtest.avi.jsonl"),
            format!("s3://{bucket}/outputs/captions/clips/vtest.avi.vtt"),
        ],
        "caption tasks write captions and nothing else"
    );
    assert!(
        fleet
            .get("outputs/embeddings/clips/vtest.avi.npy")
            .await?
            .is_none()
    );

    let jsonl = fleet
        .get("outputs/captions/clips/vtest.avi.jsonl")
        .await?
        .expect("jsonl written");
    let lines: Vec<Value> = String::from_utf8(jsonl)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), expected, "one line per sampled frame");
    let index: Vec<u64> = lines.iter().filter_map(|l| l["index"].as_u64()).collect();
    let expected_index: Vec<u64> = (0..expected as u64).map(|i| i * EVERY).collect();
    assert_eq!(
        index, expected_index,
        "every 25th frame, once each, in order"
    );
    let pts: Vec<f64> = lines.iter().filter_map(|l| l["pts_s"].as_f64()).collect();
    assert_eq!(pts.len(), expected);
    assert!(pts.windows(2).all(|w| w[1] > w[0]), "pts increase: {pts:?}");
    let captions: Vec<&str> = lines.iter().filter_map(|l| l["caption"].as_str()).collect();
    assert_eq!(captions.len(), expected);
    assert!(
        captions
            .iter()
            .all(|c| c.starts_with(PROMPT) && c.len() > PROMPT.len()),
        "captions start with the prompt and go on: {captions:?}"
    );

    let vtt = String::from_utf8(
        fleet
            .get("outputs/captions/clips/vtest.avi.vtt")
            .await?
            .expect("vtt written"),
    )?;
    assert!(vtt.starts_with("WEBVTT\n\n"), "{vtt}");
    let cues: Vec<Vec<&str>> = vtt
        .trim_end()
        .split("\n\n")
        .skip(1)
        .map(|c| c.lines().collect())
        .collect();
    assert_eq!(cues.len(), expected, "one cue per caption");
    for (i, cue) in cues.iter().enumerate() {
        let end = pts
            .get(i + 1)
            .copied()
            .unwrap_or_else(|| pts[i] + (pts[i] - pts[i - 1]));
        assert_eq!(
            cue[0],
            format!("{} --> {}", timestamp(pts[i]), timestamp(end)),
            "cue {i} runs from its frame to the next sampled frame"
        );
        assert_eq!(cue[1..].join(" "), captions[i], "cue {i} text");
    }
    fleet.cleanup(&[TASK]).await
}
