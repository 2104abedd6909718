//! `worker`: one process per device. See the library for the pipeline.

use std::process::ExitCode;

use clap::Parser;
use worker::{cli, run};

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
