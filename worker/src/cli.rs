use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

/// Framefleet worker: runs one model on one device for one task queue.
///
/// `worker [OPTIONS]` consumes frame jobs; `worker caption` captions image
/// files directly.
///
/// Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM drain in-flight jobs
/// first) or a finished command, 1 on a runtime error (model, broker, an
/// unreadable image), 2 on bad usage.
#[derive(Debug, Parser)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(flatten)]
    pub log: fleet::LogArgs,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Caption image files with a BLIP checkpoint and print one JSON line
    /// per image: {"image", "caption", "token_ids"}. Images are resized to
    /// the model's input as BlipImageProcessor does (bicubic, no crop).
    Caption(CaptionArgs),
}

/// Where a model's files come from, and what runs it.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("model").required(true).args(["model_dir", "hub_repo"])))]
pub struct ModelArgs {
    /// Directory with the model's files: config.json and model.safetensors,
    /// plus labels.txt (embed tasks) or tokenizer.json (caption tasks).
    #[arg(long, env = "FF_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,

    /// Hugging Face hub repo with the same files, fetched into the hub
    /// cache, e.g. Salesforce/blip-image-captioning-large.
    #[arg(long, env = "FF_HUB_REPO")]
    pub hub_repo: Option<String>,

    /// Branch, tag, commit or `refs/pr/N` of --hub-repo.
    #[arg(long, env = "FF_HUB_REVISION", default_value = "main")]
    pub hub_revision: String,

    /// `cpu`, or `cuda:N` (needs a build with the `cuda` feature).
    #[arg(long, env = "FF_DEVICE", default_value = "cpu")]
    pub device: String,
}

/// Caption decoding; read by caption tasks only.
#[derive(Debug, Args)]
pub struct CaptionOptions {
    /// Text every caption starts with, e.g. "a picture of". The caption
    /// includes it, as transformers' decode does.
    #[arg(long, env = "FF_PROMPT", default_value = "")]
    pub prompt: String,

    /// Tokens generated per caption at most.
    #[arg(long, env = "FF_MAX_TOKENS", default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_tokens: u16,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub broker: fleet::BrokerArgs,

    #[command(flatten)]
    pub metrics: fleet::metrics::MetricsArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub caption: CaptionOptions,

    /// Task to serve; its frames queue is `<namespace>.frames.<task>`.
    #[arg(long, env = "FF_TASK", default_value = "embed.effnet-lite0")]
    pub task: String,

    /// Most frame jobs held unacked at once (AMQP prefetch). Bounds memory:
    /// at most this many jobs of ≤ 8 MiB each. Fewer are held while that
    /// many could not be acked within the ack timeout.
    #[arg(long, env = "FF_PREFETCH", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,

    /// The broker's `consumer_timeout` (RabbitMQ's default is 30 min). The
    /// worker holds only as many jobs as it can ack within half of it, as
    /// measured on its own batches.
    #[arg(long, env = "FF_ACK_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub ack_timeout: std::time::Duration,

    /// Frames per model batch: ready jobs are packed together up to this,
    /// and a larger job runs in pieces of this size. On CPU small batches
    /// are fastest for encoders (BENCHMARKS.md); GPUs want 64 or more.
    #[arg(long, env = "FF_MAX_BATCH", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch: u32,

    /// How long a partial batch waits for more jobs before it runs.
    #[arg(long, env = "FF_MAX_WAIT_MS", default_value_t = 20)]
    pub max_wait_ms: u64,
}

#[derive(Debug, Args)]
pub struct CaptionArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub caption: CaptionOptions,

    /// Images captioned together in one batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,

    /// Image files (PNG or JPEG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}
