use std::path::PathBuf;

use candle_core::DType;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum, builder::PossibleValuesParser};

/// Framefleet worker: runs one model on one device for one task queue.
///
/// `worker [OPTIONS]` consumes frame jobs; `worker caption` captions image
/// files directly.
///
/// Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM drain in-flight jobs
/// first) or a finished command, 1 on a runtime error (model, broker, an
/// unreadable image), 2 on bad usage.
///
/// CPU threads: `RAYON_NUM_THREADS`, by default the CPUs this process may
/// use (its affinity mask and cgroup quota).
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

    /// Embed image files and print one JSON line per image: {"image",
    /// "embedding", "labels", "heads"}: the embedding, the checkpoint's own
    /// top-5 classes when it has a classifier, and each --head's answer.
    /// Images are resized to the model's input (bicubic, no crop), as the
    /// producer resizes frames.
    Embed(EmbedArgs),

    /// Heads on stored embeddings: train one from a labels file, or run
    /// heads over embeddings already in the bucket.
    #[command(subcommand)]
    Head(HeadCommand),
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The embed task; by default the one config.json's model names.
    #[arg(long, value_parser = PossibleValuesParser::new(schema::task_names().filter(|t| t.starts_with("embed."))))]
    pub task: Option<String>,

    /// A head directory to run on the embeddings; repeatable.
    #[arg(long = "head")]
    pub heads: Vec<PathBuf>,

    /// Images embedded together in one batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,

    /// Image files (PNG or JPEG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum HeadCommand {
    /// Train a head on embeddings in the bucket and a labels file; writes
    /// head.safetensors and head.json to --out, and prints the validation
    /// accuracy (classes) or error (numbers).
    Train(TrainArgs),
    /// Run heads over the embeddings stored under an output prefix and
    /// write heads/NAME/KEY.jsonl beside them, without decoding anything.
    Apply(ApplyArgs),
    /// Build a head from label names instead of training one: CLIP's text
    /// tower embeds one prompt per label, and the head answers with CLIP's
    /// zero-shot probabilities. Needs the checkpoint's tokenizer.json
    /// (scripts/make_clip_tokenizer.sh writes one). Used as any head is.
    ZeroShot(ZeroShotArgs),
}

#[derive(Debug, Args)]
pub struct ZeroShotArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub store: fleet::store::S3Args,

    /// The CLIP embed task whose embeddings the head reads.
    #[arg(long, default_value = "embed.clip-vit-b32", value_parser = PossibleValuesParser::new(schema::task_names().filter(|t| t.starts_with("embed.clip"))))]
    pub task: String,

    /// The classes, comma-separated: "a person walking,a car,an empty street".
    #[arg(long, required = true, value_delimiter = ',')]
    pub labels: Vec<String>,

    /// The prompt each label is put into, at {}.
    #[arg(long, default_value = "a photo of {}.")]
    pub template: String,

    /// The head's name: its outputs go to heads/NAME/.
    #[arg(long, value_parser = crate::heads::parse_name)]
    pub name: String,

    /// Where to write head.safetensors and head.json: a directory, or
    /// s3://BUCKET/PREFIX/ in the store.
    #[arg(long)]
    pub out: String,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub store: fleet::store::S3Args,

    /// The pipeline's output prefix, s3://BUCKET/PREFIX/, which holds
    /// embeddings/ and status/.
    #[arg(long, env = "FF_OUTPUT")]
    pub embeddings: String,

    /// CSV (header row) or JSON lines: video, frame or start_s+end_s, and
    /// label (a class) or value (a number).
    #[arg(long)]
    pub labels: PathBuf,

    /// The head's name: its outputs go to heads/NAME/.
    #[arg(long, value_parser = crate::heads::parse_name)]
    pub name: String,

    /// Where to write head.safetensors and head.json: a directory, or
    /// s3://BUCKET/PREFIX/ in the store.
    #[arg(long)]
    pub out: String,

    /// Hidden layer width; 0 trains a linear head.
    #[arg(long, default_value_t = 0)]
    pub hidden: usize,

    /// Loss: cross-entropy for class labels (the default for them), mse or
    /// huber for numbers (mse by default).
    #[arg(long, value_enum)]
    pub loss: Option<crate::heads::train::Loss>,

    /// Unit of a numeric target, recorded in head.json.
    #[arg(long, default_value = "")]
    pub unit: String,

    /// What is held out for validation: whole videos, or frames.
    #[arg(long, value_enum, default_value = "video")]
    pub split: crate::heads::train::Split,

    /// Share of videos (or frames) held out for validation.
    #[arg(long, default_value_t = 0.2)]
    pub validation_fraction: f64,

    /// Seed of the initial weights, the split and the batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    #[arg(long, default_value_t = 200)]
    pub epochs: usize,

    /// Epochs without a better validation loss before training stops.
    #[arg(long, default_value_t = 10)]
    pub patience: usize,

    #[arg(long, default_value_t = 1e-3)]
    pub learning_rate: f64,

    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,

    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub store: fleet::store::S3Args,

    /// The pipeline's output prefix, s3://BUCKET/PREFIX/.
    #[arg(long, env = "FF_OUTPUT")]
    pub embeddings: String,

    /// Only videos whose key starts with this.
    #[arg(long, default_value = "")]
    pub prefix: String,

    /// A head (head.json + head.safetensors): a directory, or
    /// s3://BUCKET/PREFIX/ in the store; repeatable.
    #[arg(long = "head", required = true)]
    pub heads: Vec<String>,
}

/// Where a model's files come from, and what runs it.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("model").args(["model_dir", "hub_repo"])))]
pub struct ModelArgs {
    /// Directory with the model's files: config.json and model.safetensors,
    /// plus labels.txt (embed tasks) or tokenizer.json (caption tasks).
    /// This or --hub-repo is needed by every task but `embed.null*`.
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

    /// The captioner's weights and arithmetic. bf16 on a GPU: tensor cores,
    /// half the memory (BENCHMARKS.md, GPU). bf16 on the CPU: the dense
    /// layers' and the attention's GEMMs round their operands to bf16 and
    /// sum in f32, on AMX tiles or AVX-512 BF16 where the CPU has them;
    /// norms, softmax and the rest stay f32 (BENCHMARKS.md, BLIP on CPU).
    #[arg(long, env = "FF_DTYPE", value_enum, default_value_t = Precision::F32)]
    pub dtype: Precision,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Precision {
    F32,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
        }
    }
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

    /// A head to run on every batch's embeddings (a directory with
    /// head.json and head.safetensors, from `worker head train`);
    /// repeatable. Refused at start unless trained on this task's encoder.
    #[arg(long = "head", env = "FF_HEADS", value_delimiter = ',')]
    pub heads: Vec<PathBuf>,

    /// Task to serve; its frames queue is `<namespace>.frames.<task>`.
    #[arg(long, env = "FF_TASK", default_value = "embed.effnet-lite0", value_parser = PossibleValuesParser::new(schema::task_names()))]
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
    /// and a larger job runs in pieces of this size. On CPU, EfficientNet
    /// runs as fast at 8 as at 32, with less memory (BENCHMARKS.md); GPUs
    /// want 64 or more.
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
