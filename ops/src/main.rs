//! `ops`: the operator's view of a Framefleet fleet.

mod status;

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

    /// Prefix of the fleet's exchanges and queues.
    #[arg(long, env = "FF_NAMESPACE", default_value = "ff")]
    namespace: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Depth (ready, unacked), consumers and message rates of every fleet queue.
    Status {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
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
    match cli.command {
        Command::Status { json } => {
            let api = status::Api::new(&cli.api_url, &cli.vhost)?;
            let queues = runtime.block_on(api.queues(&cli.namespace))?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &queues)?;
                writeln!(out)?;
            } else {
                status::write_table(&mut out, &queues)?;
            }
            out.flush()?;
        }
    }
    Ok(())
}
