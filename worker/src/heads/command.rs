//! `worker head train`, `worker head apply` and `worker head zero-shot`.

use std::time::Instant;

use anyhow::Context;

use crate::{
    cli::{ApplyArgs, HeadCommand, TrainArgs, ZeroShotArgs},
    load,
    models::clip,
};

use super::{
    bucket, dataset, labels, offline,
    spec::{HeadSpec, Target, Training, Validation},
    train::{self, Loss, Targets},
    zero_shot,
};

pub fn run(command: HeadCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match command {
        HeadCommand::Train(args) => runtime.block_on(train(args)),
        HeadCommand::Apply(args) => runtime.block_on(apply(args)),
        HeadCommand::ZeroShot(args) => runtime.block_on(zero_shot(args)),
    }
}

async fn train(args: TrainArgs) -> anyhow::Result<()> {
    if bucket::is_bucket(&args.out) {
        // A bad URL is said before training, not after.
        fleet::store::parse_url(&args.out)?;
    }
    let labels = labels::read(&args.labels)?;
    let output = fleet::store::parse_url(&args.embeddings)?;
    let client = fleet::store::client(&args.store).await?;
    let started = Instant::now();
    let (data, encoder) = dataset::gather(&client, &output, &labels, &args.unit).await?;
    tracing::info!(
        rows = data.rows(),
        videos = data.videos,
        dim = data.dim,
        encoder = %encoder.task,
        read_s = started.elapsed().as_secs_f32(),
        "labelled embeddings read"
    );
    let loss = args.loss.unwrap_or(match data.targets {
        Targets::Classes { .. } => Loss::CrossEntropy,
        Targets::Numbers { .. } => Loss::Mse,
    });
    let opts = train::Options {
        hidden: args.hidden,
        loss,
        learning_rate: args.learning_rate,
        weight_decay: args.weight_decay,
        batch: args.batch as usize,
        max_epochs: args.epochs,
        patience: args.patience,
        validation_fraction: args.validation_fraction,
        split: args.split,
        seed: args.seed,
    };
    let started = Instant::now();
    let trained = tokio::task::block_in_place(|| {
        train::train(&data, &opts, &args.name, encoder, |e| {
            tracing::info!(
                epoch = e.epoch,
                train_loss = format!("{:.4}", e.train_loss),
                validation_loss = format!("{:.4}", e.validation_loss),
                best = e.best,
                "epoch"
            );
        })
    })?;
    bucket::save(&trained, &args.out, Some(&client)).await?;
    if let (Some(training), Some(validation)) = (trained.spec.training(), trained.spec.validation())
    {
        print_summary(
            &trained.spec,
            training,
            validation,
            started.elapsed().as_secs_f64(),
        );
    }
    Ok(())
}

/// The validation figures a user reads to decide whether the head is any good.
fn print_summary(spec: &HeadSpec, t: &Training, v: &Validation, seconds: f64) {
    println!(
        "head {}: {} epochs (best {}) in {seconds:.1} s on {} rows from {} videos; validation on {} rows from {} videos",
        spec.name,
        t.epochs,
        t.best_epoch,
        t.train_rows,
        t.train_videos,
        t.validation_rows,
        t.validation_videos
    );
    match &spec.target {
        Target::Classes { classes } => {
            println!("validation accuracy {:.3}", v.accuracy.unwrap_or(0.0));
            println!("confusion (rows: true class, columns: predicted)");
            let width = classes.iter().map(String::len).max().unwrap_or(0).max(6);
            print!("{:width$}", "");
            for c in classes {
                print!(" {c:>width$}");
            }
            println!();
            for (c, row) in classes.iter().zip(v.confusion.iter().flatten()) {
                print!("{c:width$}");
                for n in row {
                    print!(" {n:>width$}");
                }
                println!();
            }
        }
        Target::Number { unit, .. } => println!(
            "validation MAE {:.4} {unit}, RMSE {:.4} {unit}",
            v.mae.unwrap_or(f64::NAN),
            v.rmse.unwrap_or(f64::NAN)
        ),
    }
}

async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let output = fleet::store::parse_url(&args.embeddings)?;
    let client = fleet::store::client(&args.store).await?;
    let mut heads = Vec::new();
    for location in &args.heads {
        heads.push(bucket::load(&client, location).await?);
    }
    let started = Instant::now();
    let report = offline::apply(&client, &output, &args.prefix, &heads).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} videos, {} frames in {seconds:.2} s ({:.0} frames/s; waiting for the store {:.2} s, heads {:.2} s); {} failed",
        report.videos,
        report.rows,
        report.rows as f64 / seconds.max(1e-9),
        report.waiting_s,
        report.heads_s,
        report.failed.len()
    );
    for (video, reason) in &report.failed {
        println!("failed: {video}: {reason}");
    }
    anyhow::ensure!(
        report.failed.is_empty(),
        "{} videos failed",
        report.failed.len()
    );
    Ok(())
}

async fn zero_shot(args: ZeroShotArgs) -> anyhow::Result<()> {
    if bucket::is_bucket(&args.out) {
        fleet::store::parse_url(&args.out)?;
    }
    let head = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let at = load::locate(&args.model, clip::TEXT_FILES)?;
        let text = clip::TextEncoder::load(&at.dir, &at.device)
            .with_context(|| format!("cannot load CLIP's text tower from {}", at.dir.display()))?;
        let request = zero_shot::Request {
            name: &args.name,
            task: &args.task,
            model: &at.name,
            labels: &args.labels,
            template: &args.template,
        };
        zero_shot::build(&text, &request)
    })?;
    let client = if bucket::is_bucket(&args.out) {
        Some(fleet::store::client(&args.store).await?)
    } else {
        None
    };
    bucket::save(&head, &args.out, client.as_ref()).await?;
    println!(
        "head {}: zero-shot over {} labels, for {} embeddings of {} dimensions, written to {}",
        args.name,
        args.labels.len(),
        args.task,
        head.spec.encoder.dim,
        args.out
    );
    Ok(())
}
