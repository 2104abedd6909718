use thiserror::Error;

use crate::{
    FrameJob, FrameResult, HeadValues, Limits, Message, ObjectRef, Payload, Provenance, Sampling,
    VideoDone, VideoFailed, VideoTask,
};

#[derive(Debug, Error, PartialEq)]
pub enum ValidationError {
    #[error("{field} is {len} bytes, over the {limit} byte limit")]
    TextTooLong {
        field: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("frame size {width}x{height} is outside 1..={max}")]
    BadSize { width: u32, height: u32, max: u32 },
    #[error("{count} frames is outside 1..={max}")]
    BadFrameCount { count: usize, max: usize },
    #[error(
        "pixels hold {actual} bytes, expected {expected} for {frames} frames of {width}x{height} RGB"
    )]
    PixelBytes {
        width: u32,
        height: u32,
        frames: usize,
        expected: u128,
        actual: usize,
    },
    #[error("compressed frames unpack to {expected} bytes, over the {limit} byte limit")]
    UnpackedTooLarge { expected: u128, limit: usize },
    #[error(
        "{sizes} JPEG sizes for {frames} frames and {bytes} bytes (one positive size per frame, summing to the bytes, for JPEG payloads only)"
    )]
    FrameBytes {
        frames: usize,
        sizes: usize,
        bytes: usize,
    },
    #[error("JPEG quality {0} is outside 1..=100")]
    BadQuality(u8),
    #[error("embedding dim {dim} is outside 1..={max} (0 only with captions)")]
    BadDim { dim: u32, max: u32 },
    #[error("{actual} embedding values, expected {expected} ({frames} frames x dim {dim})")]
    EmbeddingLen {
        frames: usize,
        dim: u32,
        expected: u128,
        actual: usize,
    },
    #[error("{labels} label lists for {frames} frames")]
    LabelCount { labels: usize, frames: usize },
    #[error("{captions} captions for {frames} frames")]
    CaptionCount { captions: usize, frames: usize },
    #[error("sampling {0:?} is not usable")]
    BadSampling(Sampling),
    #[error("time {0} s is not finite")]
    BadTime(f64),
    #[error("{heads} heads, over the limit of {max}")]
    TooManyHeads { heads: usize, max: usize },
    #[error("head {head} has {values} values for {frames} frames")]
    HeadValueCount {
        head: String,
        values: usize,
        frames: usize,
    },
    #[error("head value {0} is not finite")]
    BadHeadValue(f32),
}

type Result = std::result::Result<(), ValidationError>;

fn text(field: &'static str, value: &str, limits: &Limits) -> Result {
    if value.is_empty() {
        return Err(ValidationError::Empty(field));
    }
    if value.len() > limits.max_text_bytes {
        return Err(ValidationError::TextTooLong {
            field,
            len: value.len(),
            limit: limits.max_text_bytes,
        });
    }
    Ok(())
}

fn object(field: &'static str, o: &ObjectRef, limits: &Limits) -> Result {
    text(field, &o.bucket, limits)?;
    // A prefix may legitimately be the bucket root.
    if o.key.len() > limits.max_text_bytes {
        return Err(ValidationError::TextTooLong {
            field,
            len: o.key.len(),
            limit: limits.max_text_bytes,
        });
    }
    Ok(())
}

fn frames(list: &[crate::Frame], limits: &Limits) -> Result {
    if list.is_empty() || list.len() > limits.max_frames_per_job {
        return Err(ValidationError::BadFrameCount {
            count: list.len(),
            max: limits.max_frames_per_job,
        });
    }
    match list.iter().find(|f| !f.pts_s.is_finite()) {
        Some(f) => Err(ValidationError::BadTime(f.pts_s)),
        None => Ok(()),
    }
}

impl Message {
    /// Checks the invariants serde cannot express: sizes agree with counts,
    /// and nothing exceeds `limits`.
    pub fn validate(&self, limits: &Limits) -> Result {
        match self {
            Message::VideoTask(m) => m.validate(limits),
            Message::FrameJob(m) => m.validate(limits),
            Message::FrameResult(m) => m.validate(limits),
            Message::VideoDone(m) => m.validate(limits),
            Message::VideoFailed(m) => m.validate(limits),
        }
    }

    /// Rough encoded size, to size the output buffer once.
    pub(crate) fn size_hint(&self) -> usize {
        match self {
            Message::FrameJob(m) => m.pixels.len() + 64 * m.frames.len() + 512,
            Message::FrameResult(m) => {
                4 * m.embeddings.len()
                    + m.captions.iter().map(String::len).sum::<usize>()
                    + 128 * m.frames.len()
                    + 512
            }
            _ => 512,
        }
    }
}

fn common(task: &str, source: &ObjectRef, output: &ObjectRef, limits: &Limits) -> Result {
    text("task", task, limits)?;
    object("source", source, limits)?;
    text("source key", &source.key, limits)?;
    object("output", output, limits)
}

impl Provenance {
    pub fn validate(&self, limits: &Limits) -> Result {
        text("fingerprint", &self.fingerprint, limits)?;
        match &self.etag {
            Some(etag) => text("etag", etag, limits),
            None => Ok(()),
        }
    }
}

impl VideoTask {
    pub fn validate(&self, limits: &Limits) -> Result {
        common(&self.task, &self.source, &self.output, limits)?;
        self.provenance.validate(limits)?;
        let usable = match self.sampling {
            Sampling::All => true,
            Sampling::Fps(f) => f.is_finite() && f > 0.0,
            Sampling::EveryNth(n) => n > 0,
            Sampling::Keyframes => true,
            Sampling::Scene(t) => t > 0.0 && t < 1.0,
        };
        if !usable {
            return Err(ValidationError::BadSampling(self.sampling));
        }
        self.payload.validate()
    }
}

impl Payload {
    pub fn validate(&self) -> Result {
        match *self {
            Payload::Jpeg(q) if !(1..=100).contains(&q) => Err(ValidationError::BadQuality(q)),
            _ => Ok(()),
        }
    }
}

impl FrameJob {
    pub fn validate(&self, limits: &Limits) -> Result {
        common(&self.task, &self.source, &self.output, limits)?;
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 || w > limits.max_side || h > limits.max_side {
            return Err(ValidationError::BadSize {
                width: w,
                height: h,
                max: limits.max_side,
            });
        }
        frames(&self.frames, limits)?;
        let expected = u128::from(w) * u128::from(h) * 3 * self.frames.len() as u128;
        self.payload.validate()?;
        let sized = match self.payload {
            Payload::Jpeg(_) => {
                self.frame_bytes.len() == self.frames.len()
                    && self.frame_bytes.iter().all(|&n| n > 0)
                    && self.frame_bytes.iter().map(|&n| u64::from(n)).sum::<u64>()
                        == self.pixels.len() as u64
            }
            Payload::Raw | Payload::Zstd => self.frame_bytes.is_empty(),
        };
        if !sized {
            return Err(ValidationError::FrameBytes {
                frames: self.frames.len(),
                sizes: self.frame_bytes.len(),
                bytes: self.pixels.len(),
            });
        }
        if self.payload == Payload::Raw {
            if expected != self.pixels.len() as u128 {
                return Err(ValidationError::PixelBytes {
                    width: w,
                    height: h,
                    frames: self.frames.len(),
                    expected,
                    actual: self.pixels.len(),
                });
            }
            return Ok(());
        }
        if self.pixels.is_empty() {
            return Err(ValidationError::Empty("pixels"));
        }
        // Unpacked, a job holds no more than a raw one could, so a
        // worker's memory per job stays bounded.
        if expected > limits.max_message_bytes as u128 {
            return Err(ValidationError::UnpackedTooLarge {
                expected,
                limit: limits.max_message_bytes,
            });
        }
        Ok(())
    }
}

impl FrameResult {
    pub fn validate(&self, limits: &Limits) -> Result {
        common(&self.task, &self.source, &self.output, limits)?;
        text("model", &self.model, limits)?;
        frames(&self.frames, limits)?;
        // A result carries embeddings, captions or both, never nothing.
        let captioned = !self.captions.is_empty();
        if captioned && self.captions.len() != self.frames.len() {
            return Err(ValidationError::CaptionCount {
                captions: self.captions.len(),
                frames: self.frames.len(),
            });
        }
        for caption in &self.captions {
            if caption.len() > limits.max_text_bytes {
                return Err(ValidationError::TextTooLong {
                    field: "caption",
                    len: caption.len(),
                    limit: limits.max_text_bytes,
                });
            }
        }
        if (self.dim == 0 && !captioned) || self.dim > limits.max_embedding_dim {
            return Err(ValidationError::BadDim {
                dim: self.dim,
                max: limits.max_embedding_dim,
            });
        }
        let expected = u128::from(self.dim) * self.frames.len() as u128;
        if expected != self.embeddings.len() as u128 {
            return Err(ValidationError::EmbeddingLen {
                frames: self.frames.len(),
                dim: self.dim,
                expected,
                actual: self.embeddings.len(),
            });
        }
        if !self.labels.is_empty() && self.labels.len() != self.frames.len() {
            return Err(ValidationError::LabelCount {
                labels: self.labels.len(),
                frames: self.frames.len(),
            });
        }
        for label in self.labels.iter().flatten() {
            text("label", &label.name, limits)?;
        }
        if self.heads.len() > limits.max_heads {
            return Err(ValidationError::TooManyHeads {
                heads: self.heads.len(),
                max: limits.max_heads,
            });
        }
        for head in &self.heads {
            text("head name", &head.name, limits)?;
            if head.values.len() != self.frames.len() {
                return Err(ValidationError::HeadValueCount {
                    head: head.name.clone(),
                    values: head.values.len(),
                    frames: self.frames.len(),
                });
            }
            match &head.values {
                HeadValues::Classes(labels) => {
                    for label in labels {
                        text("head label", &label.name, limits)?;
                    }
                }
                HeadValues::Numbers(values) => {
                    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                        return Err(ValidationError::BadHeadValue(*v));
                    }
                }
            }
        }
        Ok(())
    }
}

impl VideoDone {
    pub fn validate(&self, limits: &Limits) -> Result {
        common(&self.task, &self.source, &self.output, limits)?;
        self.provenance.validate(limits)?;
        let c = &self.coverage;
        for seconds in [Some(c.covered_s), c.declared_s].into_iter().flatten() {
            if !seconds.is_finite() {
                return Err(ValidationError::BadTime(seconds));
            }
        }
        match &c.incomplete {
            Some(reason) => text("incomplete", reason, limits),
            None => Ok(()),
        }
    }
}

impl VideoFailed {
    pub fn validate(&self, limits: &Limits) -> Result {
        common(&self.task, &self.source, &self.output, limits)?;
        self.provenance.validate(limits)?;
        text("reason", &self.reason, limits)
    }

    /// Cuts `reason` to what the wire accepts, on a character boundary, so a
    /// long native error message can never make the failure itself unsendable.
    pub fn truncate_reason(reason: &str) -> String {
        let limit = Limits::DEFAULT.max_text_bytes;
        if reason.len() <= limit {
            return reason.to_owned();
        }
        let mut end = limit - 3;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &reason[..end])
    }
}
