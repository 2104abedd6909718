//! `worker caption` end to end: files in, JSON lines out, equal to
//! transformers' output for the same pixels.

use std::{path::Path, process::Command};

use serde::Deserialize;
use serde_json::Value;

const DATA: &str = "/usr/share/doc/opencv-doc/examples/data";

#[derive(Deserialize)]
struct Crop {
    file: String,
    left: u32,
    top: u32,
}

#[derive(Deserialize)]
struct Expected {
    crops: Vec<Crop>,
    prompt: String,
    prompted_ids: Vec<Vec<u32>>,
    prompted_captions: Vec<String>,
}

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/blip-tiny")
}

fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_worker"))
}

#[test]
fn captions_files_as_json_lines() -> anyhow::Result<()> {
    let e: Expected =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json"))?)?;
    let dir = std::env::temp_dir().join(format!("ff-caption-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Three of the fixture's 384×384 crops as PNG files, batched by two.
    let mut files = Vec::new();
    for c in &e.crops[..3] {
        let img = image::open(Path::new(DATA).join(&c.file))?.to_rgb8();
        let path = dir.join(format!("crop-{}", c.file));
        image::imageops::crop_imm(&img, c.left, c.top, 384, 384)
            .to_image()
            .save(&path)?;
        files.push(path);
    }
    let out = worker()
        .args([
            "caption",
            "--batch",
            "2",
            "--prompt",
            &e.prompt,
            "--model-dir",
        ])
        .arg(fixture())
        .args(&files)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["image"], files[i].to_string_lossy().as_ref());
        assert_eq!(
            line["caption"],
            e.prompted_captions[i].as_str(),
            "image {i}"
        );
        let ids: Vec<u32> = serde_json::from_value(line["token_ids"].clone())?;
        assert_eq!(ids, e.prompted_ids[i], "image {i}");
    }

    // Any other size is resized to the model's input.
    let out = worker()
        .args(["caption", "--model-dir"])
        .arg(fixture())
        .arg(Path::new(DATA).join("orange.jpg"))
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout)?;
    assert!(
        line["caption"].is_string() && line["token_ids"].is_array(),
        "{line}"
    );

    // A file that is not an image fails with exit 1, naming the file.
    let junk = dir.join("notes.png");
    std::fs::write(&junk, "not an image")?;
    let out = worker()
        .args(["caption", "--model-dir"])
        .arg(fixture())
        .arg(&junk)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("notes.png") && stderr.contains("not a readable image"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// A checkpoint whose tokenizer.json carries fixed-length padding and
/// truncation still loads, and prompts tokenize as transformers does: the
/// settings are ignored for generation prompts.
#[test]
fn tokenizer_padding_and_truncation_are_ignored() -> anyhow::Result<()> {
    let e: Expected =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json"))?)?;
    let dir = std::env::temp_dir().join(format!("ff-caption-padded-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture().join(file), dir.join(file))?;
    }
    let mut tokenizer: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("tokenizer.json"))?)?;
    tokenizer["padding"] = serde_json::json!({
        "strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"
    });
    tokenizer["truncation"] = serde_json::json!({
        "direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string())?;

    let c = &e.crops[0];
    let img = image::open(Path::new(DATA).join(&c.file))?.to_rgb8();
    let crop = dir.join("crop.png");
    image::imageops::crop_imm(&img, c.left, c.top, 384, 384)
        .to_image()
        .save(&crop)?;
    for prompt in [None, Some(e.prompt.as_str())] {
        let mut cmd = worker();
        cmd.args(["caption", "--model-dir"]).arg(&dir).arg(&crop);
        if let Some(p) = prompt {
            cmd.args(["--prompt", p]);
        }
        let out = cmd.output()?;
        assert!(
            out.status.success(),
            "prompt {prompt:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: Value = serde_json::from_slice(&out.stdout)?;
        if prompt.is_some() {
            let ids: Vec<u32> = serde_json::from_value(line["token_ids"].clone())?;
            assert_eq!(ids, e.prompted_ids[0]);
            assert_eq!(line["caption"], e.prompted_captions[0].as_str());
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// Logs written to a pipe or file carry no terminal colour codes.
#[test]
fn errors_to_a_pipe_are_plain_text() -> anyhow::Result<()> {
    let out = worker()
        .args(["caption", "--model-dir", "/nonexistent-model-dir", "x.png"])
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent-model-dir"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "ANSI codes in {stderr:?}");
    Ok(())
}
