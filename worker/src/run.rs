use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use fleet::{Publisher, Topology};
use lapin::Connection;

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
    tracing::info!(
        prefetch = cli.prefetch,
        ack_timeout = %humantime::format_duration(cli.ack_timeout),
        max_batch = cli.max_batch,
        "worker limits"
    );
    let stop = CancellationToken::new();
    tokio::spawn(shutdown_signal(stop.clone()));
    let service = Service {
        topology: Topology::new(&cli.broker.namespace),
        cli: &cli,
        model_name: name,
        size,
        tag: consumer_tag.clone(),
        stop: stop.clone(),
    };
    let mut engine = Some((model, heads));
    fleet::reconnecting(&cli.broker, &consumer_tag, &stop, async |connection| {
        service.serve(connection, &mut engine).await
    })
    .await
}

/// What one run of the worker on a broker connection needs.
struct Service<'a> {
    cli: &'a RunArgs,
    topology: Topology,
    model_name: String,
    size: (usize, usize),
    tag: String,
    stop: CancellationToken,
}

impl Service<'_> {
    /// Subscribes, infers and replies until `stop` fires or the connection
    /// is lost. The model and heads come back out of the engine thread
    /// into `engine` for the next run.
    async fn serve(
        &self,
        connection: &Connection,
        engine: &mut Option<engine::Loaded>,
    ) -> anyhow::Result<()> {
        let cli = self.cli;
        let results = Publisher::open(connection, &self.topology.jobs_exchange()).await?;
        self.topology.declare_core(results.channel()).await?;
        self.topology
            .declare_frames(results.channel(), &cli.task)
            .await?;
        let dead = Publisher::open(connection, &self.topology.dead_exchange()).await?;
        let channel = connection.create_channel().await?;

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
        // Taken only now: a connection lost while setting up above leaves
        // the model here for the next run.
        let (model, heads) = engine
            .take()
            .context("the model was lost with its engine thread")?;
        let running = engine::spawn(model, heads, cli.max_batch as usize, batch_rx, done_tx)?;
        let batching = tokio::spawn(batcher::run(job_rx, batch_tx, limits));
        let replying = tokio::spawn(
            Reply {
                results,
                model: self.model_name.clone(),
                pace: Pace::new(cli.ack_timeout, cli.prefetch),
                prefetch: prefetch_tx,
                held: held.clone(),
            }
            .run(done_rx),
        );
        let intake = Intake {
            queue: self.topology.frames_queue(&cli.task),
            task: cli.task.clone(),
            size: self.size,
            dead,
            tag: self.tag.clone(),
            ceiling: cli.prefetch,
            held,
        };
        // On return the intake has cancelled its subscription; what was
        // already taken drains through the pipeline and is acked on this
        // same channel before it closes. Anything still unacked after that
        // (all of it, when the connection was lost) is requeued by the
        // broker.
        let intake_result = tokio::select! {
            result = intake.run(&channel, job_tx, self.stop.clone(), prefetch_rx) => result,
            () = lost(connection) => {
                // A future of lapin's on the reset connection (a publish's
                // confirm, say) can stay unresolved, and then the reply
                // task, the engine, the batcher and the intake wait behind
                // it for ever (the broker-restart test met that once):
                // this run is given up and the model taken back.
                batching.abort();
                replying.abort();
                Err(anyhow::anyhow!("the broker connection was lost"))
            }
        };
        // Aborted above, or ended: the engine's channels close either way.
        let batched = batching.await;
        let replied = replying.await;
        *engine = Some(
            running
                .join()
                .map_err(|_| anyhow::anyhow!("engine thread panicked"))?,
        );
        // A task aborted above ended as asked; one that panicked is an error.
        let ended = |joined: Result<(), tokio::task::JoinError>| match joined {
            Err(e) if !e.is_cancelled() => Err(anyhow::Error::from(e)),
            _ => Ok(()),
        };
        ended(batched)?;
        let reply_result = replied.unwrap_or_else(|e| ended(Err(e)));
        // Closing waits for the broker's answer, which a dead connection
        // may never give.
        tokio::time::timeout(CLOSE_WAIT, channel.close(200, "worker stopped".into()))
            .await
            .ok();
        intake_result.and(reply_result)
    }
}

/// How long closing a channel may wait for the broker.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How often the connection's state is looked at while serving.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Resolves once `connection` is no longer connected.
async fn lost(connection: &Connection) {
    while connection.status().connected() {
        tokio::time::sleep(WATCH_EVERY).await;
    }
}
