use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use fleet::{Publisher, Topology};

use crate::{
    batcher,
    cli::RunArgs,
    engine,
    intake::Intake,
    load,
    pace::{Held, Pace},
    reply::Reply,
};

async fn shutdown_signal(stop: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutdown requested: draining in-flight jobs");
    stop.cancel();
}

pub async fn run(cli: RunArgs) -> anyhow::Result<()> {
    let spec =
        schema::known_task(&cli.task).with_context(|| format!("unknown task {}", cli.task))?;
    fleet::metrics::serve(&cli.metrics, "worker")?;
    let (model, dir) =
        tokio::task::block_in_place(|| load::model_for_task(&cli.task, &cli.model, &cli.caption))?;
    let size = model.input_size();
    if size != (spec.width as usize, spec.height as usize) {
        bail!(
            "model in {} takes {size:?}, task {} ships {}x{}",
            dir.display(),
            cli.task,
            spec.width,
            spec.height
        );
    }
    let heads = crate::heads::load_all(&cli.heads, &cli.task, model.embedding_dim())?;
    let name = model.name().to_owned();
    tracing::info!(task = %cli.task, model = name, device = %cli.model.device, dir = %dir.display(), heads = ?heads.iter().map(|h| h.name()).collect::<Vec<_>>(), "model loaded");

    let consumer_tag = format!("worker {} pid {}", cli.task, std::process::id());
    let connection =
        fleet::connect(&cli.broker, &consumer_tag, fleet::Persistence::Service).await?;
    let topology = Topology::new(&cli.broker.namespace);
    let results = Publisher::open(&connection, &topology.jobs_exchange()).await?;
    topology.declare_core(results.channel()).await?;
    topology
        .declare_frames(results.channel(), &cli.task)
        .await?;
    let dead = Publisher::open(&connection, &topology.dead_exchange()).await?;

    let channel = connection.create_channel().await?;
    tracing::info!(
        prefetch = cli.prefetch,
        ack_timeout = %humantime::format_duration(cli.ack_timeout),
        max_batch = cli.max_batch,
        "worker limits"
    );

    let stop = CancellationToken::new();
    tokio::spawn(shutdown_signal(stop.clone()));
    let (job_tx, job_rx) = mpsc::channel(usize::from(cli.prefetch));
    let (batch_tx, batch_rx) = mpsc::channel(1);
    let (done_tx, done_rx) = mpsc::channel(2);
    let limits = batcher::Limits {
        max_frames: cli.max_batch as usize,
        max_wait: Duration::from_millis(cli.max_wait_ms),
    };
    // One job until the first batch shows how many fit in the ack timeout.
    let (prefetch_tx, prefetch_rx) = watch::channel(Pace::INITIAL.min(cli.prefetch));
    let held = Held::new();
    let engine = engine::spawn(model, heads, cli.max_batch as usize, batch_rx, done_tx)?;
    let batching = tokio::spawn(batcher::run(job_rx, batch_tx, limits));
    let replying = tokio::spawn(
        Reply {
            results,
            model: name,
            pace: Pace::new(cli.ack_timeout, cli.prefetch),
            prefetch: prefetch_tx,
            held: held.clone(),
        }
        .run(done_rx),
    );
    let intake = Intake {
        queue: topology.frames_queue(&cli.task),
        task: cli.task.clone(),
        size,
        dead,
        tag: consumer_tag.clone(),
        ceiling: cli.prefetch,
        held,
    };
    // On return the intake has cancelled its subscription; what was
    // already taken drains through the pipeline and is acked on this same
    // channel before it closes. Anything still unacked after that is
    // requeued by the broker.
    let intake_result = intake
        .run(&channel, job_tx, stop.clone(), prefetch_rx)
        .await;
    batching.await?;
    let reply_result = replying.await?;
    engine
        .join()
        .map_err(|_| anyhow::anyhow!("engine thread panicked"))?;
    channel.close(200, "worker stopped".into()).await.ok();
    connection.close(200, "worker stopped".into()).await.ok();
    intake_result.and(reply_result)
}
