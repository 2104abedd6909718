use std::path::PathBuf;

use clap::{ArgGroup, Parser};

/// Framefleet worker: runs one model on one device for one task queue.
///
/// Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM drain in-flight jobs
/// first), 1 on a runtime error (model, broker), 2 on bad usage.
#[derive(Debug, Parser)]
#[command(version, group(ArgGroup::new("model").required(true).args(["model_dir", "hub_repo"])))]
pub struct Cli {
    #[command(flatten)]
    pub broker: fleet::BrokerArgs,

    #[command(flatten)]
    pub log: fleet::LogArgs,

    /// Task to serve; its frames queue is `<namespace>.frames.<task>`.
    #[arg(long, env = "FF_TASK", default_value = "embed.effnet-lite0")]
    pub task: String,

    /// `cpu`, or `cuda:N` (needs a build with the `cuda` feature).
    #[arg(long, env = "FF_DEVICE", default_value = "cpu")]
    pub device: String,

    /// Directory with config.json, model.safetensors and labels.txt.
    #[arg(long, env = "FF_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,

    /// Hugging Face hub repo with the same files, fetched into the hub cache.
    #[arg(long, env = "FF_HUB_REPO")]
    pub hub_repo: Option<String>,

    /// Frame jobs held unacked at once (AMQP prefetch). Bounds memory:
    /// at most this many jobs of ≤ 8 MiB each.
    #[arg(long, env = "FF_PREFETCH", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,

    /// Frames per model batch: ready jobs are packed together up to this,
    /// and a larger job runs in pieces of this size. On CPU small batches
    /// are fastest (BENCHMARKS.md); GPUs want 64 or more.
    #[arg(long, env = "FF_MAX_BATCH", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch: u32,

    /// How long a partial batch waits for more jobs before it runs.
    #[arg(long, env = "FF_MAX_WAIT_MS", default_value_t = 20)]
    pub max_wait_ms: u64,
}
