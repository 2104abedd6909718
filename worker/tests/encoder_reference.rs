//! The ViT encoders against transformers. The committed fixtures were made
//! by scripts/make_vit_fixtures.py from tiny random checkpoints with the
//! real tensor names and geometry, on six 224×224 crops of opencv-doc PNG
//! photos:
//! - fixtures/dinov2-tiny, a `Dinov2Model` (14-pixel patches, a position
//!   grid trained at 518), expected `pooler_output`, and it beside the
//!   patch tokens' mean for `-cls-mean`;
//! - fixtures/clip-tiny, a `CLIPModel` shaped like ViT-B/32 (quick_gelu,
//!   unbiased projection), expected `get_image_features`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use candle_core::{DType, Device};
use schema::Fit;
use serde::Deserialize;
use worker::models::{self, Backend, Images, LoadOptions, Model, blip::Limits, files::ModelError};

const DATA: &str = "/usr/share/doc/opencv-doc/examples/data";
const TOLERANCE: f32 = 1e-4;
/// (fixture, task) pairs.
const CASES: &[(&str, &str)] = &[
    ("dinov2-tiny", "embed.dinov2-small"),
    ("dinov2-tiny", "embed.dinov2-small-cls-mean"),
    ("clip-tiny", "embed.clip-vit-b32"),
];

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
    /// DINOv2's class token beside the patch tokens' mean.
    #[serde(default)]
    cls_mean: Vec<Vec<f32>>,
}

impl Expected {
    /// What `task` must embed each crop as.
    fn reference(&self, task: &str) -> &[Vec<f32>] {
        if task.ends_with("-cls-mean") {
            &self.cls_mean
        } else {
            &self.embeddings
        }
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn expected(name: &str) -> Expected {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).expect("expected.json");
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

fn encoder(dir: &Path, task: &str) -> Result<Box<dyn Model>, ModelError> {
    let opts = LoadOptions {
        spec: schema::known_task(task).expect("a known task"),
        name: "tiny".into(),
        prompt: String::new(),
        limits: Limits {
            max_tokens: 1,
            min_tokens: 0,
        },
        dtype: DType::F32,
    };
    let backend = Backend::for_task(task).expect("a backend");
    models::load(backend, dir, &Device::Cpu, &opts)
}

fn embed(model: &dyn Model, pixels: &[u8], count: usize) -> Vec<f32> {
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
fn embeddings_match_transformers_batched_and_one_at_a_time() {
    for &(name, task) in CASES {
        let e = expected(name);
        let model = encoder(&fixture(name), task).expect("fixture loads");
        assert_eq!(model.input_size(), (224, 224), "{task}");
        let dim = e.reference(task)[0].len();
        assert_eq!(model.embedding_dim(), dim, "{task}");
        let images: Vec<_> = e.crops.iter().map(|c| crop(c, e.side)).collect();
        let pixels: Vec<u8> = images.iter().flat_map(|i| i.as_raw().clone()).collect();
        let reference: Vec<f32> = e.reference(task).concat();

        let batched = embed(model.as_ref(), &pixels, images.len());
        let diff = max_abs_diff(&batched, &reference);
        assert!(
            diff <= TOLERANCE,
            "{task}: batched differs from transformers by {diff}"
        );

        let single: Vec<f32> = images
            .iter()
            .flat_map(|i| embed(model.as_ref(), i.as_raw(), 1))
            .collect();
        let diff = max_abs_diff(&single, &batched);
        assert!(
            diff <= TOLERANCE,
            "{task}: one at a time differs from batched by {diff}"
        );

        // Different photos give different embeddings (the test is not
        // comparing constants).
        let spread = max_abs_diff(&reference[..dim], &reference[dim..2 * dim]);
        assert!(
            spread > 0.1,
            "{task}: the embeddings barely differ: {spread}"
        );
    }
}

/// A processor that crops differently from the task's fit would feed the
/// model other pixels than the producer sends: refused at load.
#[test]
fn a_processor_at_odds_with_the_task_is_refused() {
    for &(name, task) in CASES {
        let dir = std::env::temp_dir().join(format!("ff-{task}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for file in [
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
        ] {
            std::fs::copy(fixture(name).join(file), dir.join(file)).expect("copy");
        }
        let processor = dir.join("preprocessor_config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&processor).expect("read"))
                .expect("json");
        config["size"] = serde_json::json!({"shortest_edge": 300});
        std::fs::write(&processor, config.to_string()).expect("write");
        let message = format!("{}", encoder(&dir, task).err().expect("refused"));
        assert!(
            message.contains("preprocessor_config.json") && message.contains(task),
            "{task}: {message}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// `worker embed` on a PNG already at the processor's resize (so only its
/// centre 224² is cut out: the fixture's first crop, pixel for pixel)
/// prints transformers' embedding; the task cannot be guessed for widths no
/// released checkpoint has.
#[test]
fn worker_embed_prints_the_reference_embedding() {
    for &(name, task) in CASES {
        let e = expected(name);
        let Some(Fit::CenterCrop { short }) = schema::known_task(task).map(|t| t.fit) else {
            panic!("{task} is not a centre-crop task");
        };
        let dir = std::env::temp_dir().join(format!("ff-{task}-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let png = dir.join("crop.png");
        let first = &e.crops[0];
        let margin = (short - e.side) / 2;
        let wider = Crop {
            file: first.file.clone(),
            left: first.left - margin,
            top: first.top - margin,
        };
        crop(&wider, short).save(&png).expect("png");
        let run = |task: Option<&str>| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
            cmd.arg("embed").arg("--model-dir").arg(fixture(name));
            if let Some(task) = task {
                cmd.args(["--task", task]);
            }
            cmd.arg(&png).output().expect("worker runs")
        };

        let out = run(Some(task));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
        let got: Vec<f32> = serde_json::from_value(line["embedding"].clone()).expect("embedding");
        let diff = max_abs_diff(&got, &e.reference(task)[0]);
        assert!(
            diff <= TOLERANCE,
            "{task}: worker embed differs from transformers by {diff}"
        );

        let out = run(None);
        assert_eq!(out.status.code(), Some(1), "{task}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("pass --task"), "{task}: {stderr}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
