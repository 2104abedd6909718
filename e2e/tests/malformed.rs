//! Bad input is dead-lettered with its reason and the fleet keeps going;
//! `ops status` shows where it went.

use std::time::Duration;

use e2e::{Fleet, env};
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::AMQPValue,
};
use schema::{Frame, FrameJob, Message, ObjectRef, Payload};

const TASK: &str = "embed.effnet-lite0";

#[tokio::test(flavor = "multi_thread")]
async fn malformed_jobs_are_dead_lettered_with_the_reason() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("malformed").await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    fleet.spawn("worker", "worker", &["--task", TASK, "--model-dir", &model])?;

    let topology = fleet::Topology::new(&fleet.namespace);
    let connection = fleet.connect("e2e malformed").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    topology.declare_core(&channel).await?;
    topology.declare_frames(&channel, TASK).await?;

    let wrong_size = FrameJob {
        video_id: uuid::Uuid::nil(),
        task: TASK.into(),
        source: ObjectRef {
            bucket: fleet.bucket.clone(),
            key: "x.mp4".into(),
        },
        output: ObjectRef {
            bucket: fleet.bucket.clone(),
            key: "outputs/".into(),
        },
        seq: 0,
        width: 8,
        height: 8,
        frames: vec![Frame {
            index: 0,
            pts_s: 0.0,
        }],
        payload: Payload::Raw,
        pixels: vec![0; 8 * 8 * 3],
        frame_bytes: Vec::new(),
    };
    // The right size, but its zstd payload is not zstd.
    let mut corrupt_zstd = wrong_size.clone();
    (corrupt_zstd.width, corrupt_zstd.height) = (224, 224);
    corrupt_zstd.payload = Payload::Zstd;
    corrupt_zstd.pixels = b"not zstd".to_vec();
    let payloads = [
        b"not a framefleet message".to_vec(),
        schema::encode(&Message::FrameJob(wrong_size))?,
        schema::encode(&Message::FrameJob(corrupt_zstd))?,
    ];
    for payload in &payloads {
        channel
            .basic_publish(
                topology.jobs_exchange().as_str().into(),
                TASK.into(),
                BasicPublishOptions::default(),
                payload,
                BasicProperties::default(),
            )
            .await?
            .await?;
    }

    let mut reasons = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while reasons.len() < payloads.len() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "dead letters missing; worker log:\n{}",
            fleet.log("worker")
        );
        let Some(message) = channel
            .basic_get(
                topology.dead_queue().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await?
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let headers = message
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        let reason = match headers.inner().get(fleet::REASON_HEADER) {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => anyhow::bail!("dead letter without a reason header: {other:?}"),
        };
        reasons.push(reason);
    }
    assert!(reasons.iter().any(|r| r.contains("magic")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("frames are 8x8")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("zstd payload does not unpack")),
        "{reasons:?}"
    );

    // The worker survived them all and still serves the queue.
    let queue = channel
        .queue_declare(
            topology.frames_queue(TASK).as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    assert_eq!(
        queue.consumer_count(),
        1,
        "worker still consuming:\n{}",
        fleet.log("worker")
    );

    let status: serde_json::Value =
        serde_json::from_str(&fleet.run("ops", &["status", "--json"])?)?;
    let names: Vec<&str> = status
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|q| q["queue"].as_str())
        .collect();
    for queue in [
        topology.videos_queue(),
        topology.results_queue(),
        topology.dead_queue(),
        topology.frames_queue(TASK),
    ] {
        assert!(
            names.contains(&queue.as_str()),
            "{queue} missing from ops status: {names:?}"
        );
    }
    let table = fleet.run("ops", &["status"])?;
    assert!(
        table.starts_with("QUEUE") && table.contains(&format!("frames.{TASK} ")),
        "{table}"
    );
    assert!(
        table.lines().next().is_some_and(|h| h.ends_with("ETA")),
        "{table}"
    );
    assert!(
        table.lines().all(|l| l.chars().count() <= 80),
        "80 columns:\n{table}"
    );
    channel.close(200, "done".into()).await.ok();
    fleet.cleanup(&[TASK]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_credential_is_reported_with_the_bucket_and_the_reason() -> anyhow::Result<()> {
    let fleet = Fleet::new("creds").await?;
    let url = format!("s3://{}/in/", fleet.bucket);
    let out = fleet.output(
        "producer",
        &["submit", &url],
        &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")],
    )?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refused listing is a runtime error"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&url), "names the location: {stderr}");
    assert!(
        [
            "SignatureDoesNotMatch",
            "AccessDenied",
            "InvalidAccessKeyId",
            "403"
        ]
        .iter()
        .any(|r| stderr.contains(r)),
        "says why: {stderr}"
    );
    assert!(!stderr.contains("not-the-secret"), "never logs the secret");
    fleet.cleanup(&[]).await
}
