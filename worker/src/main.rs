//! `worker`: one process per device. See the library for the pipeline.

use std::process::ExitCode;

use clap::Parser;
use worker::{caption, cli, embed, heads, run};

fn main() -> ExitCode {
    count_threads_once();
    worker::heap::keep_freed_buffers();
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

/// Sets `RAYON_NUM_THREADS` to the CPUs this process may use, unless the
/// user set it. candle-core 0.11.1 asks for its thread count on every
/// matmul and, without that variable, counts physical cores by reading
/// /proc/cpuinfo each time (`utils::get_num_threads`): a fifth of
/// EfficientNet-Lite0's time on a 2-core machine, and the host's count
/// inside a CPU-limited container. `available_parallelism` honours the
/// affinity mask and cgroup quota, and rayon's pool takes the same number.
#[allow(unsafe_code)]
fn count_threads_once() {
    const VAR: &str = "RAYON_NUM_THREADS";
    if std::env::var_os(VAR).is_some_and(|v| !v.is_empty()) {
        return;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: the first statement of `main`, before any other thread exists
    // to read the environment.
    unsafe { std::env::set_var(VAR, threads.to_string()) };
}
