//! CLIP's text tower, its tokenizer and zero-shot heads against
//! transformers, on the committed fixtures/clip-tiny (made by
//! scripts/make_vit_fixtures.py): a tiny random `CLIPModel` with CLIP's
//! real 49408-token vocabulary, and the tokenizer.json that
//! scripts/make_clip_tokenizer.py built from open_clip's vocabulary file.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use candle_core::Device;
use serde::Deserialize;
use worker::models::clip::TextEncoder;

const DATA: &str = "/usr/share/doc/opencv-doc/examples/data";
const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Crop {
    file: String,
    left: u32,
    top: u32,
}

#[derive(Deserialize)]
struct Tokens {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct ZeroShot {
    labels: Vec<String>,
    template: String,
    text_features: Vec<Vec<f32>>,
    probabilities: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Expected {
    crops: Vec<Crop>,
    side: u32,
    tokens: Vec<Tokens>,
    zero_shot: ZeroShot,
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny")
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(fixture().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn worker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(args)
        .output()
        .expect("worker runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ff-zero-shot-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// 165 texts (labels, punctuation, digits, accents, Japanese, emoji, odd
/// whitespace, 120 tokens of one prompt, the GPL's lines): the ids equal
/// transformers' Python CLIPTokenizer's, which the fixture script checked
/// against open_clip's own.
#[test]
fn the_tokenizer_gives_transformers_ids() {
    let e = expected();
    let text = TextEncoder::load(&fixture(), &Device::Cpu).expect("fixture loads");
    assert!(e.tokens.len() > 100);
    for t in &e.tokens {
        assert_eq!(
            text.tokenize(&t.text).expect("tokenizes"),
            t.ids,
            "{:?}",
            t.text
        );
    }
}

#[test]
fn text_features_match_transformers() {
    let e = expected();
    let z = &e.zero_shot;
    let text = TextEncoder::load(&fixture(), &Device::Cpu).expect("fixture loads");
    for (label, reference) in z.labels.iter().zip(&z.text_features) {
        let prompt = z.template.replace("{}", label);
        let ours = text.features(&prompt).expect("features");
        let diff = max_abs_diff(&ours, reference);
        assert!(diff <= TOLERANCE, "{prompt:?} differs by {diff}");
    }
    let first = text.features("a photo of a dog.").expect("features");
    let second = text.features("a photo of a chessboard.").expect("features");
    assert!(max_abs_diff(&first, &second) > 0.1, "prompts barely differ");

    let long = vec!["a very long prompt"; 30].join(" ");
    let message = format!("{:#}", text.features(&long).expect_err("too long"));
    assert!(message.contains("at most 77"), "{message}");
}

/// `worker head zero-shot` builds a head that `worker embed --head` runs:
/// each crop's most probable label and its probability are transformers'
/// `logits_per_image.softmax(-1)`.
#[test]
fn a_zero_shot_head_answers_as_transformers() {
    let e = expected();
    let z = &e.zero_shot;
    let dir = scratch("head");
    let head = dir.join("head");
    let model = fixture();
    let model = model.to_str().expect("utf-8 path");
    let labels = z.labels.join(",");
    let out = worker(&[
        "head",
        "zero-shot",
        "--model-dir",
        model,
        "--labels",
        &labels,
        "--template",
        &z.template,
        "--name",
        "scene",
        "--out",
        head.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(head.join("head.json")).expect("head.json"))
            .expect("json");
    assert_eq!(spec["format"], "framefleet-head/2");
    assert_eq!(spec["encoder"]["task"], "embed.clip-vit-b32");
    assert_eq!(spec["zero_shot"]["prompts"][0], "a photo of a dog.");

    let mut images = Vec::new();
    for (i, c) in e.crops.iter().enumerate() {
        let path = dir.join(format!("{i}.png"));
        image::open(Path::new(DATA).join(&c.file))
            .expect("opencv-doc photo")
            .crop_imm(c.left, c.top, e.side, e.side)
            .to_rgb8()
            .save(&path)
            .expect("png");
        images.push(path.to_str().expect("utf-8").to_owned());
    }
    let mut args = vec![
        "embed",
        "--model-dir",
        model,
        "--task",
        "embed.clip-vit-b32",
        "--head",
        head.to_str().expect("utf-8"),
    ];
    args.extend(images.iter().map(String::as_str));
    let out = worker(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), e.crops.len());
    for (line, probabilities) in lines.iter().zip(&z.probabilities) {
        let (best, p) = probabilities
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &p)| if p > b.1 { (i, p) } else { b });
        let answer = &line["heads"]["scene"];
        assert_eq!(answer["label"], z.labels[best].as_str(), "{line}");
        let score = answer["score"].as_f64().expect("score") as f32;
        assert!((score - p).abs() <= TOLERANCE, "{score} vs {p}: {line}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_labels_and_templates_are_refused() {
    let dir = scratch("refused");
    let model = fixture();
    let model = model.to_str().expect("utf-8 path");
    let out_dir = dir.join("head");
    let out_dir = out_dir.to_str().expect("utf-8");
    for (labels, template, reason) in [
        ("a dog", "a photo of {}.", "two labels or more"),
        ("a dog,a dog", "a photo of {}.", "given twice"),
        ("a dog,a cat", "a photo", "has no {}"),
    ] {
        let out = worker(&[
            "head",
            "zero-shot",
            "--model-dir",
            model,
            "--labels",
            labels,
            "--template",
            template,
            "--name",
            "x",
            "--out",
            out_dir,
        ]);
        assert_eq!(out.status.code(), Some(1), "{labels} / {template}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{stderr}");
        assert!(!Path::new(out_dir).exists(), "nothing is written");
    }
    std::fs::remove_dir_all(&dir).ok();
}
