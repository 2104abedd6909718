//! `worker`: one process per device. Consumes a task's frame jobs, runs the
//! model on dynamically assembled batches, publishes one result per job and
//! acks the job only after that result is confirmed.

mod batcher;
mod cli;
mod device;
mod engine;
mod intake;
mod models;
mod reply;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    fleet::telemetry::init(cli.log.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "worker stopped");
            ExitCode::FAILURE
        }
    }
}
