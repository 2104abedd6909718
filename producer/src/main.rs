//! `producer`: bucket → frame jobs (`run`), results → bucket (`collect`),
//! and `submit` to enqueue videos by hand.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use fleet::store;
use fleet::{Publisher, Topology};
use producer::{collect, decode, discover, produce, submit};

/// Framefleet producer, collector and discovery.
///
/// Exit codes: 0 success (or a clean shutdown on SIGINT/SIGTERM), 1 runtime
/// error (broker, store), 2 bad usage, 3 `submit` queued nothing (no object,
/// or all done or in flight).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    broker: fleet::BrokerArgs,
    #[command(flatten)]
    s3: store::S3Args,
    #[command(flatten)]
    log: fleet::LogArgs,
    #[command(flatten)]
    metrics: fleet::metrics::MetricsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue one video task per object under s3://BUCKET/PREFIX, once:
    /// an object whose status records the same ETag and pipeline, or whose
    /// run is still queued, is skipped unless --force.
    Submit {
        /// s3://BUCKET/PREFIX of the videos.
        source: String,
        #[command(flatten)]
        pipeline: discover::PipelineArgs,
        #[command(flatten)]
        claims: discover::ClaimArgs,
        /// Queue every object as a new run, even if done or in flight.
        #[arg(long)]
        force: bool,
    },
    /// Keep watching s3://BUCKET/PREFIX and enqueue each new or changed
    /// video once (polling, plus S3 event notifications if configured).
    /// Several watchers of the same prefix and pipeline may run: one is
    /// active, the others stand by.
    Watch {
        /// s3://BUCKET/PREFIX of the videos.
        source: String,
        #[command(flatten)]
        pipeline: discover::PipelineArgs,
        #[command(flatten)]
        claims: discover::ClaimArgs,
        #[command(flatten)]
        watch: discover::watch::WatchArgs,
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
        Command::Watch { .. } => "watch",
        Command::Run { .. } => "producer",
        Command::Collect { .. } => "collector",
    };
    fleet::metrics::serve(&cli.metrics, role)?;
    let name = format!("{role} pid {}", std::process::id());
    let topology = Topology::new(&cli.broker.namespace);
    let s3 = store::client(&cli.s3).await?;
    match cli.command {
        Command::Submit {
            source,
            pipeline,
            claims,
            force,
        } => {
            // A one-shot command: a bad URL, credential or certificate
            // fails at once.
            let connection =
                fleet::connect(&cli.broker, &name, fleet::Persistence::OneShot).await?;
            let (publisher, _) = open_publishers(&connection, &topology).await?;
            let source = store::parse_url(&source)?;
            let enqueuer =
                discover::Enqueuer::new(&s3, &publisher, &pipeline, &source, &claims, force)?;
            let tally = submit::submit(&enqueuer, &source).await?;
            connection.close(200, "done".into()).await.ok();
            println!(
                "{} videos submitted from {source} ({} already done, {} already queued)",
                tally.queued, tally.done, tally.in_flight
            );
            return Ok(if tally.queued == 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            });
        }
        Command::Watch {
            source,
            pipeline,
            claims,
            watch,
        } => {
            let source = store::parse_url(&source)?;
            let stop = stop_on_signal();
            fleet::reconnecting(&cli.broker, &name, &stop, async |connection| {
                let (publisher, dead) = open_publishers(connection, &topology).await?;
                let enqueuer =
                    discover::Enqueuer::new(&s3, &publisher, &pipeline, &source, &claims, false)?;
                discover::watch::Watcher::new(
                    enqueuer,
                    source.clone(),
                    watch.clone(),
                    topology.clone(),
                    dead,
                )
                .run(connection, stop.clone())
                .await
            })
            .await?;
        }
        Command::Run { produce } => {
            decode::init().context("cannot initialise libav")?;
            let stop = stop_on_signal();
            fleet::reconnecting(&cli.broker, &name, &stop, async |connection| {
                let (publisher, dead) = open_publishers(connection, &topology).await?;
                let channel = connection.create_channel().await?;
                produce::Producer::new(
                    s3.clone(),
                    cli.s3.clone(),
                    topology.clone(),
                    publisher,
                    dead,
                    produce.clone(),
                )
                .run(channel, stop.clone())
                .await
            })
            .await?;
        }
        Command::Collect { prefetch } => {
            let stop = stop_on_signal();
            fleet::reconnecting(&cli.broker, &name, &stop, async |connection| {
                let (_, dead) = open_publishers(connection, &topology).await?;
                let channel = connection.create_channel().await?;
                collect::Collector {
                    s3: s3.clone(),
                    topology: topology.clone(),
                    dead,
                    prefetch,
                    store_retry: cli.s3.store_retry,
                }
                .run(channel, stop.clone())
                .await
            })
            .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The jobs exchange's publisher (with the core topology declared, as
/// every process does in case it starts first) and the dead-letter one.
async fn open_publishers(
    connection: &lapin::Connection,
    topology: &Topology,
) -> anyhow::Result<(Publisher, Publisher)> {
    let publisher = Publisher::open(connection, &topology.jobs_exchange()).await?;
    topology.declare_core(publisher.channel()).await?;
    let dead = Publisher::open(connection, &topology.dead_exchange()).await?;
    Ok((publisher, dead))
}
