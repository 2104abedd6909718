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
    // `submit` is a one-shot command: a bad URL, credential or certificate
    // must fail at once; the rest are services that ride out outages.
    let (role, persistence) = match &cli.command {
        Command::Submit { .. } => ("submit", fleet::Persistence::OneShot),
        Command::Watch { .. } => ("watch", fleet::Persistence::Service),
        Command::Run { .. } => ("producer", fleet::Persistence::Service),
        Command::Collect { .. } => ("collector", fleet::Persistence::Service),
    };
    fleet::metrics::serve(&cli.metrics, role)?;
    let connection = fleet::connect(
        &cli.broker,
        &format!("{role} pid {}", std::process::id()),
        persistence,
    )
    .await?;
    let topology = Topology::new(&cli.broker.namespace);
    let publisher = Publisher::open(&connection, &topology.jobs_exchange()).await?;
    topology.declare_core(publisher.channel()).await?;
    let s3 = store::client(&cli.s3).await?;
    let code = match cli.command {
        Command::Submit {
            source,
            pipeline,
            claims,
            force,
        } => {
            let source = store::parse_url(&source)?;
            let enqueuer =
                discover::Enqueuer::new(&s3, &publisher, &pipeline, &source, &claims, force)?;
            let tally = submit::submit(&enqueuer, &source).await?;
            println!(
                "{} videos submitted from {source} ({} already done, {} already queued)",
                tally.queued, tally.done, tally.in_flight
            );
            if tally.queued == 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Watch {
            source,
            pipeline,
            claims,
            watch,
        } => {
            let source = store::parse_url(&source)?;
            let enqueuer =
                discover::Enqueuer::new(&s3, &publisher, &pipeline, &source, &claims, false)?;
            let dead = Publisher::open(&connection, &topology.dead_exchange()).await?;
            discover::watch::Watcher::new(enqueuer, source, watch, topology, dead)
                .run(&connection, stop_on_signal())
                .await?;
            ExitCode::SUCCESS
        }
        Command::Run { produce } => {
            decode::init().context("cannot initialise libav")?;
            let dead = Publisher::open(&connection, &topology.dead_exchange()).await?;
            let channel = connection.create_channel().await?;
            produce::Producer::new(s3, cli.s3.clone(), topology, publisher, dead, produce)
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
                store_retry: cli.s3.store_retry,
            }
            .run(channel, stop_on_signal())
            .await?;
            ExitCode::SUCCESS
        }
    };
    connection.close(200, "done".into()).await.ok();
    Ok(code)
}
