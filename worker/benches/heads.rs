//! Heads on this machine, in one run: seconds to train a head on 100,000
//! embeddings of 1,280 dimensions (linear, and one hidden layer of 256),
//! and offline application from the bucket against merely reading the
//! same `.npy` objects. Run: `scripts/bench_heads.sh` (starts the store).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker::heads::{
    Head, offline,
    spec::Encoder,
    train::{self, Dataset, Loss, Options, Split, Targets},
};

const DIM: usize = 1280;
const CLASSES: usize = 10;

fn dataset(rows: usize, videos: usize) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let centres: Vec<f32> = (0..CLASSES * DIM)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut x = Vec::with_capacity(rows * DIM);
    let mut ids = Vec::with_capacity(rows);
    for r in 0..rows {
        let c = r % CLASSES;
        x.extend(
            centres[c * DIM..(c + 1) * DIM]
                .iter()
                .map(|v| v + rng.random_range(-2.0f32..2.0)),
        );
        ids.push(c as u32);
    }
    Dataset {
        x,
        dim: DIM,
        targets: Targets::Classes {
            ids,
            names: (0..CLASSES).map(|c| format!("class{c}")).collect(),
        },
        video: (0..rows).map(|r| r * videos / rows).collect(),
        videos,
    }
}

fn encoder() -> Encoder {
    Encoder {
        task: "embed.effnet-lite0".into(),
        model: Some("bench".into()),
        dim: DIM,
    }
}

fn options(hidden: usize, epochs: usize) -> Options {
    Options {
        hidden,
        loss: Loss::CrossEntropy,
        learning_rate: 1e-3,
        weight_decay: 1e-4,
        batch: 256,
        max_epochs: epochs,
        patience: epochs,
        validation_fraction: 0.2,
        split: Split::Video,
        seed: 0,
    }
}

fn bench_training() -> anyhow::Result<Vec<std::path::PathBuf>> {
    let data = dataset(100_000, 100);
    println!("## Training: 100,000 x 1,280 embeddings, 10 classes, batch 256, 10 epochs\n");
    println!("| head | seconds | s/epoch | validation accuracy |");
    println!("|---|---:|---:|---:|");
    let mut dirs = Vec::new();
    for hidden in [0, 256] {
        let started = Instant::now();
        let trained = train::train(
            &data,
            &options(hidden, 10),
            &format!("h{hidden}"),
            encoder(),
            |_| {},
        )?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "| {} | {seconds:.1} | {:.2} | {:.3} |",
            if hidden == 0 {
                "linear".to_owned()
            } else {
                format!("hidden {hidden}")
            },
            seconds / trained.spec.training().map_or(0, |t| t.epochs) as f64,
            trained
                .spec
                .validation()
                .and_then(|v| v.accuracy)
                .unwrap_or(0.0)
        );
        let dir = std::env::temp_dir().join(format!("ff-bench-head-{hidden}"));
        trained.save(&dir)?;
        dirs.push(dir);
    }
    Ok(dirs)
}

/// Stores `videos` synthetic embedding sets as the collector would.
async fn store(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    videos: usize,
    rows: usize,
) -> anyhow::Result<()> {
    client.create_bucket().bucket(bucket).send().await.ok();
    let output = schema::ObjectRef {
        bucket: bucket.into(),
        key: "out/".into(),
    };
    let data = dataset(rows, 1);
    for v in 0..videos {
        let key = format!("v/{v:03}.mp4");
        let layout = fleet::layout::Layout {
            output: &output,
            source_key: &key,
        };
        let mut npy = fleet::npy::f32_matrix_header(rows as u64, DIM as u64);
        npy.extend(data.x.iter().flat_map(|f| f.to_le_bytes()));
        let mut frames = String::from("[");
        for i in 0..rows {
            frames += &format!(
                "{}\n{{\"index\":{i},\"pts_s\":{},\"labels\":[]}}",
                if i == 0 { "" } else { "," },
                i as f64 / 25.0
            );
        }
        frames += "\n]\n";
        let status = serde_json::json!({
            "state": "done", "video_id": uuid::Uuid::nil(), "source": key, "task": "embed.effnet-lite0",
            "model": "bench", "frames": rows, "finished_at_unix_ms": 0,
        });
        fleet::store::put(
            client,
            bucket,
            &layout.embeddings(),
            npy,
            "application/octet-stream",
        )
        .await?;
        fleet::store::put(
            client,
            bucket,
            &layout.frames(),
            frames.into_bytes(),
            "application/json",
        )
        .await?;
        fleet::store::put(
            client,
            bucket,
            &layout.status(),
            serde_json::to_vec(&status)?,
            "application/json",
        )
        .await?;
    }
    Ok(())
}

async fn bench_offline(heads: &[Head]) -> anyhow::Result<()> {
    let Ok(endpoint) = std::env::var("FF_S3_ENDPOINT") else {
        println!(
            "\n(offline application skipped: no FF_S3_ENDPOINT; scripts/bench_heads.sh starts a store)"
        );
        return Ok(());
    };
    let client = fleet::store::client(&fleet::store::S3Args {
        s3_endpoint: Some(endpoint),
        store_retry: std::time::Duration::ZERO,
        s3_ca_file: None,
    })
    .await?;
    let (videos, rows) = (20, 5000);
    let bucket = "ff-bench-heads";
    store(&client, bucket, videos, rows).await?;
    let output = schema::ObjectRef {
        bucket: bucket.into(),
        key: "out/".into(),
    };
    println!(
        "\n## Offline application: {videos} videos x {rows} embeddings of 1,280 (25.6 MB .npy each), both heads\n"
    );
    println!("| pass | seconds | embeddings/s | vs reading |");
    println!("|---|---:|---:|---:|");
    for round in 0..2 {
        let started = Instant::now();
        for v in 0..videos {
            let key = format!("out/embeddings/v/{v:03}.mp4.npy");
            std::hint::black_box(fleet::store::get(&client, bucket, &key).await?);
        }
        let read = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let report = offline::apply(&client, &output, "", heads).await?;
        let apply = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            report.failed.is_empty() && report.rows == (videos * rows) as u64,
            "{report:?}"
        );
        let total = (videos * rows) as f64;
        println!(
            "| read the .npy objects (round {round}) | {read:.2} | {:.0} | 1.00 |",
            total / read
        );
        println!(
            "| `worker head apply` (round {round}; heads {:.2} s, waiting for reads {:.2} s) | {apply:.2} | {:.0} | {:.2} |",
            report.heads_s,
            report.waiting_s,
            total / apply,
            apply / read
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let dirs = bench_training()?;
    let heads = dirs
        .iter()
        .map(|d| Head::load(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    tokio::runtime::Runtime::new()?.block_on(bench_offline(&heads))
}
