//! DINOv2 against transformers: the committed fixture in fixtures/dinov2-tiny
//! was made by scripts/make_dinov2_fixture.py from a tiny random
//! `Dinov2Model` (real tensor names, 14-pixel patches, a position grid
//! trained at 518) and six 224×224 crops of opencv-doc PNG photos.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use candle_core::Device;
use serde::Deserialize;
use worker::models::{Images, Model, dinov2::Dinov2Encoder};

const DATA: &str = "/usr/share/doc/opencv-doc/examples/data";
const TASK: &str = "embed.dinov2-small";
const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Crop {
    file: String,
    left: u32,
    top: u32,
}

#[derive(Deserialize)]
struct Expected {
    crops: Vec<Crop>,
    side: u32,
    embeddings: Vec<Vec<f32>>,
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dinov2-tiny")
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(fixture().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

/// `side`² of the photo from the crop's corner.
fn crop(c: &Crop, side: u32) -> image::RgbImage {
    let path = Path::new(DATA).join(&c.file);
    let img = image::open(&path)
        .unwrap_or_else(|err| panic!("{} (from opencv-doc): {err}", path.display()))
        .to_rgb8();
    image::imageops::crop_imm(&img, c.left, c.top, side, side).to_image()
}

fn encoder(dir: &Path) -> Result<Dinov2Encoder, worker::models::files::ModelError> {
    let spec = schema::known_task(TASK).expect("a known task");
    Dinov2Encoder::load("dinov2-tiny", dir, &Device::Cpu, &spec)
}

fn embed(model: &Dinov2Encoder, pixels: &[u8], count: usize) -> Vec<f32> {
    let side = model.input_size().0;
    model
        .infer(Images {
            pixels,
            count,
            width: side,
            height: side,
        })
        .expect("inference")
        .embeddings
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn pooled_output_matches_transformers_batched_and_one_at_a_time() {
    let e = expected();
    let model = encoder(&fixture()).expect("fixture loads");
    assert_eq!(model.input_size(), (224, 224));
    assert_eq!(model.embedding_dim(), e.embeddings[0].len());
    let images: Vec<_> = e.crops.iter().map(|c| crop(c, e.side)).collect();
    let pixels: Vec<u8> = images.iter().flat_map(|i| i.as_raw().clone()).collect();
    let reference: Vec<f32> = e.embeddings.concat();

    let batched = embed(&model, &pixels, images.len());
    let diff = max_abs_diff(&batched, &reference);
    assert!(
        diff <= TOLERANCE,
        "batched embeddings differ from transformers by {diff}"
    );

    let single: Vec<f32> = images
        .iter()
        .flat_map(|i| embed(&model, i.as_raw(), 1))
        .collect();
    let diff = max_abs_diff(&single, &batched);
    assert!(
        diff <= TOLERANCE,
        "one at a time differs from batched by {diff}"
    );

    // Different photos give different embeddings (the test is not
    // comparing constants).
    let spread = max_abs_diff(&reference[..32], &reference[32..64]);
    assert!(
        spread > 0.1,
        "the fixture's embeddings barely differ: {spread}"
    );
}

/// A processor that crops differently from the task's fit would feed the
/// model other pixels than the producer sends: refused at load.
#[test]
fn a_processor_at_odds_with_the_task_is_refused() {
    let dir = std::env::temp_dir().join(format!("ff-dinov2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for file in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        std::fs::copy(fixture().join(file), dir.join(file)).expect("copy");
    }
    let processor = dir.join("preprocessor_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&processor).expect("read")).expect("json");
    config["size"]["shortest_edge"] = 224.into();
    std::fs::write(&processor, config.to_string()).expect("write");
    let err = encoder(&dir).err().expect("refused");
    let message = format!("{err}");
    assert!(
        message.contains("preprocessor_config.json") && message.contains(TASK),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `worker embed` on a 256×256 PNG (already at the processor's resize, so
/// only its centre 224² is cut out: the fixture's first crop, pixel for
/// pixel) prints transformers' embedding; the task cannot be guessed for a
/// width no released DINOv2 has.
#[test]
fn worker_embed_prints_the_reference_embedding() {
    let e = expected();
    let dir = std::env::temp_dir().join(format!("ff-dinov2-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let png = dir.join("crop.png");
    let first = &e.crops[0];
    let margin = (256 - e.side) / 2;
    let wider = Crop {
        file: first.file.clone(),
        left: first.left - margin,
        top: first.top - margin,
    };
    crop(&wider, 256).save(&png).expect("png");
    let worker = env!("CARGO_BIN_EXE_worker");
    let fixture = fixture();
    let run = |task: Option<&str>| {
        let mut cmd = Command::new(worker);
        cmd.arg("embed").arg("--model-dir").arg(&fixture);
        if let Some(task) = task {
            cmd.args(["--task", task]);
        }
        cmd.arg(&png).output().expect("worker runs")
    };

    let out = run(Some(TASK));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let got: Vec<f32> = serde_json::from_value(line["embedding"].clone()).expect("embedding");
    let diff = max_abs_diff(&got, &e.embeddings[0]);
    assert!(
        diff <= TOLERANCE,
        "worker embed differs from transformers by {diff}"
    );

    let out = run(None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pass --task"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}
