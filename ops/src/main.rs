//! `ops`: the operator's view of a Framefleet fleet.

mod dead;
mod status;
mod watch;

use std::{io::Write, process::ExitCode};

use clap::{Parser, Subcommand};

/// Framefleet operations CLI.
///
/// Exit codes: 0 success (also when stdout is closed early, as by `| head`),
/// 1 error (management API unreachable, bad credentials), 2 bad usage.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// RabbitMQ management API. The default is the local-development guest account.
    #[arg(
        long,
        env = "FF_RABBITMQ_API",
        default_value = "http://guest:guest@127.0.0.1:15672"
    )]
    api_url: String,

    /// Virtual host the fleet lives in.
    #[arg(long, env = "FF_VHOST", default_value = "/")]
    vhost: String,

    #[command(flatten)]
    broker: fleet::BrokerArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Depth (ready, unacked), consumers, message rates and ETA (ready ÷
    /// ack rate) of every fleet queue.
    Status {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Live view: queues with smoothed ETA, videos in flight with frames
    /// done of total, failures in the last hour, dead letters. Full screen
    /// on a terminal (q, Esc or Ctrl-C quits); plain lines otherwise.
    Watch {
        /// Time between refreshes, e.g. 2s.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
    },
    /// The dead-letter queue: what died, where from, and why.
    #[command(subcommand)]
    Dead(DeadCommand),
}

#[derive(Debug, Subcommand)]
enum DeadCommand {
    /// Every dead letter with its source queue, reason and video.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One dead letter in full (headers and decoded message), by its # in `list`.
    Peek { n: usize },
    /// Put dead letters back on the queue they came from.
    Requeue(Select),
    /// Delete dead letters for good.
    Purge(Select),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["all", "reason", "n"])))]
struct Select {
    /// Every dead letter.
    #[arg(long)]
    all: bool,
    /// Those whose reason contains this text.
    #[arg(long)]
    reason: Option<String>,
    /// These, by their # in `list`.
    n: Vec<usize>,
}

impl Select {
    fn selection(self) -> dead::Selection {
        match (self.all, self.reason) {
            (true, _) => dead::Selection::All,
            (false, Some(r)) => dead::Selection::Reason(r),
            (false, None) => dead::Selection::Positions(self.n),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ops: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let namespace = &cli.broker.namespace;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Status { json } => {
            let api = status::Api::new(&cli.api_url, &cli.vhost)?;
            let queues = runtime.block_on(api.queues(namespace))?;
            if json {
                serde_json::to_writer_pretty(&mut out, &queues)?;
                writeln!(out)?;
            } else {
                status::write_table(&mut out, &queues, namespace)?;
            }
        }
        Command::Watch { interval } => {
            drop(out);
            let api = status::Api::new(&cli.api_url, &cli.vhost)?;
            runtime.block_on(watch::run(&api, &cli.broker, namespace, interval))?;
            return Ok(());
        }
        Command::Dead(command) => {
            let dead = runtime.block_on(dead::DeadQueue::open(&cli.broker, namespace))?;
            match command {
                DeadCommand::List { json } => {
                    let letters = runtime.block_on(dead.list())?;
                    if json {
                        serde_json::to_writer_pretty(&mut out, &letters)?;
                        writeln!(out)?;
                    } else {
                        dead::write_table(&mut out, &letters, namespace)?;
                    }
                }
                DeadCommand::Peek { n } => {
                    let letter = runtime.block_on(dead.peek(n))?;
                    serde_json::to_writer_pretty(&mut out, &letter)?;
                    writeln!(out)?;
                }
                DeadCommand::Requeue(select) => {
                    let count = runtime.block_on(dead.requeue(&select.selection()))?;
                    writeln!(out, "{count} dead letters requeued")?;
                }
                DeadCommand::Purge(select) => {
                    let count = runtime.block_on(dead.purge(&select.selection()))?;
                    writeln!(out, "{count} dead letters purged")?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}
