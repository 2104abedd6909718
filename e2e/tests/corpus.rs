//! The bad-input corpus, end to end. `scripts/bad-corpus.py` makes odd,
//! broken and hostile videos with the outcome each must get; a bucket holds
//! them, 200 tiny one-frame videos beside them, and malformed, oversized,
//! wrong-version and wrong-kind messages go to every queue while the fleet
//! runs. Every object must end with a status that names it, in its
//! expected state, with the expected reason; every bad message must be
//! dead-lettered with its reason; no process may die or panic.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use e2e::{Fleet, env};
use lapin::{options::BasicGetOptions, types::AMQPValue};

const TASK: &str = "embed.effnet-lite0";
const TINY: usize = 200;

struct Case {
    name: String,
    state: String,
    error: Option<String>,
    what: String,
}

fn generate(dir: &Path) -> anyhow::Result<Vec<Case>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/bad-corpus.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "bad-corpus.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join("manifest.tsv"))?
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            anyhow::ensure!(f.len() == 4, "bad manifest line {line:?}");
            Ok(Case {
                name: f[0].to_owned(),
                state: f[1].to_owned(),
                error: (f[2] != "-").then(|| f[2].to_owned()),
                what: f[3].to_owned(),
            })
        })
        .collect()
}

/// Bad messages for one queue's routing key: (payload, reason the
/// dead letter must carry).
fn bad_messages() -> Vec<(Vec<u8>, &'static str)> {
    let mut wrong_version = b"FF".to_vec();
    wrong_version.extend_from_slice(&999u16.to_le_bytes());
    wrong_version.extend_from_slice(&[0; 64]);
    let mut oversized = b"FF".to_vec();
    oversized.extend_from_slice(&schema::VERSION.to_le_bytes());
    oversized.resize(17 * 1024 * 1024, 0xAB);
    let mut corrupt = b"FF".to_vec();
    corrupt.extend_from_slice(&schema::VERSION.to_le_bytes());
    corrupt.extend_from_slice(&[0xFF; 32]);
    vec![
        (Vec::new(), "too short"),
        (b"{\"not\": \"framefleet\"}".to_vec(), "magic"),
        (wrong_version, "wire version 999 is not supported"),
        (oversized, "exceeds the 16777216 byte limit"),
        (corrupt, "corrupt"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_ends_named_with_its_reason() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("corpus").await?;
    let dir = fleet.work.join("corpus");
    let cases = generate(&dir)?;
    assert!(cases.len() >= 20, "{} kinds", cases.len());
    for case in &cases {
        fleet
            .upload(&format!("in/{}", case.name), &dir.join(&case.name))
            .await?;
    }
    // A huge count of tiny files: one-frame 16x16 videos.
    let tiny = dir.join("tiny.mkv");
    e2e::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x64",
        "-frames:v",
        "1",
        "-vf",
        "scale=16:16",
        "-c:v",
        "ffv1",
        &tiny.to_string_lossy(),
    ])?;
    for i in 0..TINY {
        fleet.upload(&format!("in/tiny/{i:04}.mkv"), &tiny).await?;
    }

    let model = env("FF_TEST_MODEL_DIR")?;
    fleet.spawn("producer-a", "producer", &["run"])?;
    fleet.spawn("producer-b", "producer", &["run"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    fleet.spawn(
        "worker",
        "worker",
        &["--task", TASK, "--model-dir", &model, "--max-batch", "32"],
    )?;
    let bucket = fleet.bucket.clone();
    fleet.run(
        "producer",
        &[
            "submit",
            &format!("s3://{bucket}/in/"),
            "--task",
            TASK,
            "--sample",
            "fps=2",
        ],
    )?;

    // Bad messages on every queue while the fleet works.
    let keys = ["videos", "results", TASK];
    for key in keys {
        for (payload, _) in bad_messages() {
            fleet.publish_raw(key, &payload).await?;
        }
    }

    let mut names: Vec<String> = cases.iter().map(|c| format!("in/{}", c.name)).collect();
    names.extend((0..TINY).map(|i| format!("in/tiny/{i:04}.mkv")));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let statuses = fleet
        .wait_for_status(&names, Duration::from_secs(900))
        .await?;

    let mut wrong = Vec::new();
    for (case, status) in cases.iter().zip(&statuses) {
        let source = status["source"].as_str().unwrap_or_default();
        let state = status["state"].as_str().unwrap_or_default();
        let error = status["error"].as_str();
        let reason_ok = match (&case.error, error) {
            (None, None) => true,
            (Some(want), Some(got)) => got.contains(want.as_str()),
            _ => false,
        };
        if !source.contains(&case.name) || state != case.state || !reason_ok {
            wrong.push(format!(
                "{} ({}): want {} {:?}, got {state} {error:?} for {source}",
                case.name, case.what, case.state, case.error
            ));
        }
        // A failure's reason names the object.
        if state == "failed" && !error.unwrap_or_default().contains(&case.name) {
            wrong.push(format!(
                "{}: the reason does not name it: {error:?}",
                case.name
            ));
        }
    }
    for (i, status) in statuses[cases.len()..].iter().enumerate() {
        if status["state"] != "done" || status["frames"] != 1 {
            wrong.push(format!("tiny/{i:04}.mkv: {status}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} outcomes wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Each bad message is in the dead-letter queue with its reason.
    let connection = fleet.connect("e2e corpus").await?;
    let channel = connection.create_channel().await?;
    let dead = fleet::Topology::new(&fleet.namespace).dead_queue();
    let mut reasons = Vec::new();
    while let Some(letter) = channel
        .basic_get(dead.as_str().into(), BasicGetOptions::default())
        .await?
    {
        let headers = letter
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        let text = |h: &str| match headers.inner().get(h) {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            _ => String::new(),
        };
        reasons.push((text("x-ff-queue"), text(fleet::REASON_HEADER)));
    }
    connection.close(200, "done".into()).await.ok();
    for key in keys {
        let queue = if key == TASK {
            format!("{}.frames.{key}", fleet.namespace)
        } else {
            format!("{}.{key}", fleet.namespace)
        };
        for (_, reason) in bad_messages() {
            assert!(
                reasons
                    .iter()
                    .any(|(q, r)| *q == queue && r.contains(reason)),
                "no dead letter from {queue} saying {reason:?}; got {reasons:#?}"
            );
        }
    }
    assert_eq!(
        reasons.len(),
        keys.len() * bad_messages().len(),
        "{reasons:#?}"
    );

    for label in ["producer-a", "producer-b", "collector", "worker"] {
        assert!(
            fleet.exited(label)?.is_none(),
            "{label} died:\n{}",
            fleet.log(label)
        );
        assert!(
            !fleet.log(label).contains("panicked"),
            "{label} panicked:\n{}",
            fleet.log(label)
        );
    }
    fleet.cleanup(&[TASK]).await
}
