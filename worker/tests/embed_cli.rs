//! `worker embed` on real photos with the real EfficientNet-Lite0 weights
//! (`FF_TEST_MODEL_DIR`, set by scripts/test.sh): one line per image, the
//! task found from config.json, batched equal to one at a time, equal to an
//! independent float64 numpy forward pass, and heads answering beside the
//! embedding.

use std::process::Command;

use serde_json::Value;
use worker::heads::{
    spec::Encoder,
    train::{self, Dataset, Loss, Options, Split, Targets},
};

const DATA: &str = "/usr/share/doc/opencv-doc/examples/data";
const PHOTOS: [&str; 3] = ["orange.jpg", "baboon.jpg", "squirrel_cls.jpg"];

fn model_dir() -> String {
    std::env::var("FF_TEST_MODEL_DIR").expect("FF_TEST_MODEL_DIR: run through scripts/test.sh")
}

fn embed(extra: &[&str]) -> Vec<Value> {
    let photos: Vec<String> = PHOTOS.iter().map(|p| format!("{DATA}/{p}")).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["embed", "--model-dir", &model_dir()])
        .args(extra)
        .args(&photos)
        .output()
        .expect("worker runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn embedding(line: &Value) -> Vec<f64> {
    line["embedding"]
        .as_array()
        .expect("an embedding")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

#[test]
fn embeds_files_batched_as_one_at_a_time() {
    let batched = embed(&["--batch", "3"]);
    let single = embed(&["--batch", "1"]);
    assert_eq!(batched.len(), 3);
    for (b, s) in batched.iter().zip(&single) {
        assert_eq!(b["image"], s["image"]);
        let (b, s) = (embedding(b), embedding(s));
        assert_eq!(b.len(), 1280);
        let worst = b
            .iter()
            .zip(&s)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "batched differs from single by {worst}");
    }
    // The checkpoint's own classifier rides along: a real orange is an orange.
    assert_eq!(
        batched[0]["labels"][0]["name"], "orange",
        "{}",
        batched[0]["labels"]
    );
}

/// scripts/effnet_reference.py: the network in float64 numpy from the
/// checkpoint's layers, batch norms unfolded, on the same pixels (224²
/// crops of real photos, so nothing is resampled). It agrees with ONNX
/// Runtime on the same weights to 4e-6 (scripts/bench.sh prints that).
#[test]
fn embeddings_equal_an_independent_numpy_forward_pass() {
    let python = std::env::var("FF_PYTHON").expect("FF_PYTHON: run through scripts/test.sh");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/effnet_reference.py"
    );
    let dir = std::env::temp_dir().join(format!("ff-effnet-reference-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (photo, left, top) in [("orange.jpg", 40, 30), ("baboon.jpg", 150, 200)] {
        let crop = image::open(format!("{DATA}/{photo}"))
            .expect("opencv-doc photo")
            .crop_imm(left, top, 224, 224)
            .to_rgb8();
        let (png, rgb) = (
            dir.join(format!("{photo}.png")),
            dir.join(format!("{photo}.rgb")),
        );
        crop.save(&png).expect("png");
        std::fs::write(&rgb, crop.as_raw()).expect("rgb");
        let out = Command::new(env!("CARGO_BIN_EXE_worker"))
            .args(["embed", "--model-dir", &model_dir()])
            .arg(&png)
            .output()
            .expect("worker runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = embedding(&serde_json::from_slice(&out.stdout).expect("one JSON line"));
        let out = Command::new(&python)
            .args([script, &model_dir()])
            .arg(&rgb)
            .arg("224")
            .output()
            .expect("the reference runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reference: Vec<f64> = serde_json::from_slice(&out.stdout).expect("a JSON list");
        assert_eq!(ours.len(), reference.len());
        let worst = ours
            .iter()
            .zip(&reference)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        let largest = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(largest > 1.0, "{photo}: a degenerate embedding");
        assert!(worst < 1e-4, "{photo}: differs from numpy by {worst}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn heads_answer_beside_the_embedding_and_foreign_ones_are_refused() {
    // A head on real embeddings of the three photos: each its own class.
    let lines = embed(&[]);
    let mut x = Vec::new();
    for line in &lines {
        x.extend(embedding(line).into_iter().map(|v| v as f32));
    }
    let rows = lines.len();
    let data = Dataset {
        x: x.repeat(4),
        dim: 1280,
        targets: Targets::Classes {
            ids: (0..4 * rows).map(|r| (r % rows) as u32).collect(),
            names: vec!["orange".into(), "baboon".into(), "squirrel".into()],
        },
        video: (0..4 * rows).map(|r| r / rows).collect(),
        videos: 4,
    };
    let opts = Options {
        hidden: 0,
        loss: Loss::CrossEntropy,
        learning_rate: 1e-2,
        weight_decay: 0.0,
        batch: 8,
        max_epochs: 50,
        patience: 50,
        validation_fraction: 0.25,
        split: Split::Video,
        seed: 1,
    };
    let encoder = Encoder {
        task: "embed.effnet-lite0".into(),
        model: None,
        dim: 1280,
    };
    let trained = train::train(&data, &opts, "photo", encoder, |_| {}).expect("trains");
    let dir = std::env::temp_dir().join(format!("ff-embed-head-{}", std::process::id()));
    trained.save(&dir).expect("saves");
    let answered = embed(&["--head", &dir.to_string_lossy()]);
    for (line, name) in answered.iter().zip(["orange", "baboon", "squirrel"]) {
        assert_eq!(line["heads"]["photo"]["label"], name, "{line}");
    }

    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args([
            "embed",
            "--model-dir",
            &model_dir(),
            "--task",
            "caption.blip-base",
        ])
        .arg(format!("{DATA}/orange.jpg"))
        .output()
        .expect("worker runs");
    // A caption task is not an embed task: refused as bad usage, with the
    // tasks that are.
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("possible values") && stderr.contains("embed.dinov2-small"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
