/// Bounds every decoded message must respect. They keep a hostile or broken
/// payload from making a consumer allocate without limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded message; RabbitMQ 4 refuses more than 16 MiB by default.
    pub max_message_bytes: usize,
    pub max_frames_per_job: usize,
    pub max_side: u32,
    pub max_embedding_dim: u32,
    pub max_text_bytes: usize,
    /// Heads one result may carry.
    pub max_heads: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_message_bytes: 16 * 1024 * 1024,
        max_frames_per_job: 4096,
        max_side: 4096,
        max_embedding_dim: 65536,
        max_text_bytes: 4096,
        max_heads: 64,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
