//! Model backends. The worker's engine sees only the `Encoder` trait.

mod bias_act;
mod classifier;
pub mod depthwise;
mod effnet_encoder;
pub mod effnet_lite;
pub mod files;

pub use classifier::Classifier;
pub use effnet_encoder::EffnetEncoder;

/// A batch of same-sized RGB24 images, packed one after another.
#[derive(Clone, Copy)]
pub struct Images<'a> {
    pub pixels: &'a [u8],
    pub count: usize,
    pub width: usize,
    pub height: usize,
}

/// What an encoder returns for a batch: one embedding per image, and the
/// top labels of each classification head (empty without one).
#[derive(Debug)]
pub struct Encoded {
    pub dim: usize,
    pub embeddings: Vec<f32>,
    pub labels: Vec<Vec<schema::Label>>,
}

/// An image encoder with optional heads, owned by one engine thread.
pub trait Encoder: Send {
    /// Model name recorded in every result.
    fn name(&self) -> &str;
    /// (width, height) the producer must resize frames to.
    fn input_size(&self) -> (usize, usize);
    fn encode(&self, images: Images<'_>) -> candle_core::Result<Encoded>;
}
