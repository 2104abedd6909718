//! `producer`: bucket → frame jobs (`run`), results → bucket (`collect`),
//! and `submit` to enqueue videos by hand.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use fleet::{Publisher, Topology};
use producer::{collect, decode, produce, s3, submit};

/// Framefleet producer and collector.
///
/// Exit codes: 0 success (or a clean shutdown on SIGINT/SIGTERM), 1 runtime
/// error (broker, store), 2 bad usage, 3 `submit` found no object to enqueue.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    broker: fleet::BrokerArgs,
    #[command(flatten)]
    s3: s3::S3Args,
    #[command(flatten)]
    log: fleet::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue one video task per object under s3://BUCKET/PREFIX.
    Submit {
        /// s3://BUCKET/PREFIX of the videos.
        source: String,
        /// Task, i.e. model and output kind.
        #[arg(long, env = "FF_TASK", default_value = "embed.effnet-lite0")]
        task: String,
        /// Which frames to keep: all, fps=F or every=N.
        #[arg(long, default_value = "all", value_parser = submit::parse_sampling)]
        sample: schema::Sampling,
        /// s3://BUCKET/PREFIX for outputs [default: s3://<source bucket>/outputs/].
        #[arg(long)]
        output: Option<String>,
    },
    /// Decode queued videos and publish their frame jobs.
    Run {
        #[command(flatten)]
        produce: produce::ProduceArgs,
    },
    /// Write per-video outputs from the results queue.
    Collect {
        /// Results held unacked at once.
        #[arg(long, env = "FF_PREFETCH", default_value_t = 16)]
        prefetch: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    fleet::telemetry::init(cli.log.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "producer stopped");
            ExitCode::FAILURE
        }
    }
}

fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            tracing::error!("cannot listen for SIGTERM");
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutdown requested");
        token.cancel();
    });
    stop
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let role = match &cli.command {
        Command::Submit { .. } => "submit",
        Command::Run { .. } => "producer",
        Command::Collect { .. } => "collector",
    };
    let connection = fleet::connect(
        &cli.broker.amqp_url,
        &format!("{role} pid {}", std::process::id()),
    )
    .await?;
    let topology = Topology::new(&cli.broker.namespace);
    let publisher = Publisher::open(&connection, &topology.jobs_exchange()).await?;
    topology.declare_core(publisher.channel()).await?;
    let s3 = s3::client(&cli.s3).await;
    let code = match cli.command {
        Command::Submit {
            source,
            task,
            sample,
            output,
        } => {
            let source = s3::parse_url(&source)?;
            let output = match output {
                Some(url) => s3::parse_url(&url)?,
                None => schema::ObjectRef {
                    bucket: source.bucket.clone(),
                    key: "outputs/".into(),
                },
            };
            let submission = submit::Submission {
                source,
                output: submit::normalize_prefix(output),
                task,
                sampling: sample,
            };
            let count = submit::submit(&s3, &publisher, &submission).await?;
            println!("{count} videos submitted from {}", submission.source);
            if count == 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Run { produce } => {
            decode::init().context("cannot initialise libav")?;
            let dead = Publisher::open(&connection, &topology.dead_exchange()).await?;
            let channel = connection.create_channel().await?;
            produce::Producer::new(s3, topology, publisher, dead, produce)
                .run(channel, stop_on_signal())
                .await?;
            ExitCode::SUCCESS
        }
        Command::Collect { prefetch } => {
            let dead = Publisher::open(&connection, &topology.dead_exchange()).await?;
            let channel = connection.create_channel().await?;
            collect::Collector {
                s3,
                topology,
                dead,
                prefetch,
            }
            .run(channel, stop_on_signal())
            .await?;
            ExitCode::SUCCESS
        }
    };
    connection.close(200, "done".into()).await.ok();
    Ok(code)
}
