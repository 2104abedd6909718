//! `worker`: one process per device. See the library for the pipeline.

use std::process::ExitCode;

use clap::Parser;
use worker::{caption, cli, embed, heads, run};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    fleet::telemetry::init(cli.log.log_format);
    let outcome = match cli.command {
        Some(cli::Command::Caption(args)) => caption::run(&args),
        Some(cli::Command::Embed(args)) => embed::run(&args),
        Some(cli::Command::Head(command)) => heads::command::run(command),
        None => match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(run::run(cli.run)),
            Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "worker stopped");
            ExitCode::FAILURE
        }
    }
}
