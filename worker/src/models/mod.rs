//! Model backends. The worker's engine sees only the `Model` trait. Each
//! family has a directory of its own; `kernels` holds the CPU kernels they
//! share, `vit` the vision-transformer blocks.

pub mod blip;
pub mod clip;
pub mod dinov2;
pub mod effnet;
pub mod encoder;
pub mod files;
pub mod kernels;
mod null;
mod processor;
mod vit;

use std::path::Path;

use candle_core::Device;

pub use effnet::EffnetEncoder;
use files::ModelError;
pub use null::Null;

/// A batch of same-sized RGB24 images, packed one after another.
#[derive(Clone, Copy)]
pub struct Images<'a> {
    pub pixels: &'a [u8],
    pub count: usize,
    pub width: usize,
    pub height: usize,
}

/// What a model returns for a batch. Encoders fill one embedding per image
/// and the top labels of their classification heads (empty without one);
/// captioners fill one caption per image.
#[derive(Debug, Default)]
pub struct Outputs {
    pub dim: usize,
    pub embeddings: Vec<f32>,
    pub labels: Vec<Vec<schema::Label>>,
    pub captions: Vec<String>,
    /// Each head's outputs over every image of the batch.
    pub heads: Vec<schema::HeadOutputs>,
}

impl Outputs {
    /// Appends the outputs of the next images.
    pub fn extend(&mut self, more: Outputs) {
        self.dim = more.dim;
        self.embeddings.extend(more.embeddings);
        self.labels.extend(more.labels);
        self.captions.extend(more.captions);
    }
}

/// A model with its heads, owned by one engine thread.
pub trait Model: Send {
    /// Model name recorded in every result.
    fn name(&self) -> &str;
    /// (width, height) the producer must resize frames to.
    fn input_size(&self) -> (usize, usize);
    /// Length of the embedding per image; 0 for models that only caption.
    fn embedding_dim(&self) -> usize;
    fn infer(&self, images: Images<'_>) -> candle_core::Result<Outputs>;
}

/// Which backend serves a task: by the task's family, the part before the dot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    EffnetLite,
    Dinov2,
    Clip,
    Blip,
    /// No model, no files: `embed.null*`, at the task's input side.
    Null {
        side: usize,
    },
}

impl Backend {
    pub fn for_task(task: &str) -> Option<Self> {
        match task.split_once('.') {
            Some(("embed", m)) if m.starts_with("effnet-lite") => Some(Self::EffnetLite),
            Some(("embed", m)) if m.starts_with("dinov2") => Some(Self::Dinov2),
            Some(("embed", m)) if m.starts_with("clip") => Some(Self::Clip),
            Some(("caption", m)) if m.starts_with("blip") => Some(Self::Blip),
            Some(("embed", m)) if m.starts_with("null") => {
                schema::known_task(task).map(|t| Self::Null {
                    side: t.width as usize,
                })
            }
            _ => None,
        }
    }

    /// Files its model directory must hold.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Self::EffnetLite => EffnetEncoder::FILES,
            Self::Dinov2 => dinov2::FILES,
            Self::Clip => clip::FILES,
            Self::Blip => blip::FILES,
            Self::Null { .. } => &[],
        }
    }
}

/// Options only some backends read.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The task served: its input size and how frames are fitted to it.
    pub spec: schema::TaskSpec,
    /// Name recorded in results when the checkpoint does not carry one.
    pub name: String,
    /// Text every caption starts with.
    pub prompt: String,
    pub limits: blip::Limits,
    /// A captioner's weights and arithmetic (encoders are f32).
    pub dtype: candle_core::DType,
}

pub fn load(
    backend: Backend,
    dir: &Path,
    device: &Device,
    opts: &LoadOptions,
) -> Result<Box<dyn Model>, ModelError> {
    Ok(match backend {
        Backend::EffnetLite => Box::new(EffnetEncoder::load(dir, device)?),
        Backend::Dinov2 => Box::new(dinov2::load(&opts.name, dir, device, &opts.spec)?),
        Backend::Clip => Box::new(clip::load(&opts.name, dir, device, &opts.spec)?),
        Backend::Null { side } => Box::new(Null::new(side)),
        Backend::Blip => Box::new(blip::Captioner::load(
            &opts.name,
            dir,
            device,
            &opts.prompt,
            opts.limits,
            opts.dtype,
        )?),
    })
}
