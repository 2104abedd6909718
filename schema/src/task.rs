/// What the producer must know of a task without loading its model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    pub name: &'static str,
    pub width: u32,
    pub height: u32,
    pub fit: Fit,
}

/// How a frame becomes the model's `width`×`height` input: the geometry of
/// the checkpoint's Hugging Face image processor, which the producer applies
/// in its one scaling pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// The whole frame, stretched to the input size (`do_center_crop`
    /// off: BLIP, EfficientNet as converted).
    Stretch,
    /// Shorter side resized to `short`, then the centre `width`×`height`
    /// cut out (`size.shortest_edge` + `crop_size`: DINOv2, CLIP).
    CenterCrop { short: u32 },
}

impl Fit {
    /// The size a whole `src_w`×`src_h` frame is scaled to, before the
    /// centred `width`×`height` is cut out of it: the input size itself for
    /// a stretch; for a centre crop, the shorter side at `short` and the
    /// longer one in proportion, truncated as transformers' resize does
    /// (never below the crop). The longer side stops at 16 × `short`, so a
    /// hostile 4000×1 stream cannot make a giant picture; a frame flatter
    /// than 16:1 is squeezed along its length, which no camera makes.
    pub fn scaled_size(self, src_w: u32, src_h: u32, width: u32, height: u32) -> (u32, u32) {
        match self {
            Self::Stretch => (width, height),
            Self::CenterCrop { short } => {
                let along = |long: u32, short_side: u32| {
                    let exact = u64::from(short) * u64::from(long) / u64::from(short_side.max(1));
                    exact.min(16 * u64::from(short)) as u32
                };
                let (w, h) = if src_w <= src_h {
                    (short, along(src_h, src_w))
                } else {
                    (along(src_w, src_h), short)
                };
                (w.max(width), h.max(height))
            }
        }
    }
}

const TASKS: &[TaskSpec] = &[
    TaskSpec {
        name: "embed.effnet-lite0",
        width: 224,
        height: 224,
        fit: Fit::Stretch,
    },
    // BLIP base and large both read 384×384 (BlipImageProcessor's size).
    TaskSpec {
        name: "caption.blip-base",
        width: 384,
        height: 384,
        fit: Fit::Stretch,
    },
    TaskSpec {
        name: "caption.blip-large",
        width: 384,
        height: 384,
        fit: Fit::Stretch,
    },
    // DINOv2 ViT-S/14 and ViT-B/14 (BitImageProcessor: shorter side to
    // 256, centre crop 224): 16×16 patches of 14 pixels.
    TaskSpec {
        name: "embed.dinov2-small",
        width: 224,
        height: 224,
        fit: Fit::CenterCrop { short: 256 },
    },
    TaskSpec {
        name: "embed.dinov2-base",
        width: 224,
        height: 224,
        fit: Fit::CenterCrop { short: 256 },
    },
    // The same, embedding the class token beside the mean of the patch
    // tokens (twice the width), as DINOv2's linear probes read them.
    TaskSpec {
        name: "embed.dinov2-small-cls-mean",
        width: 224,
        height: 224,
        fit: Fit::CenterCrop { short: 256 },
    },
    TaskSpec {
        name: "embed.dinov2-base-cls-mean",
        width: 224,
        height: 224,
        fit: Fit::CenterCrop { short: 256 },
    },
    // CLIP ViT-B/32 (CLIPImageProcessor: shorter side to 224, centre 224).
    TaskSpec {
        name: "embed.clip-vit-b32",
        width: 224,
        height: 224,
        fit: Fit::CenterCrop { short: 224 },
    },
    // No model (the worker's null backend): zero embeddings at once, to
    // measure the pipeline without compute. Benchmarks and tests only.
    TaskSpec {
        name: "embed.null",
        width: 224,
        height: 224,
        fit: Fit::Stretch,
    },
    TaskSpec {
        name: "embed.null-384",
        width: 384,
        height: 384,
        fit: Fit::Stretch,
    },
];

/// The spec of a task the fleet knows, by routing key.
pub fn known_task(name: &str) -> Option<TaskSpec> {
    TASKS.iter().copied().find(|t| t.name == name)
}

/// Every task the fleet knows, for `--help` texts and checks.
pub fn task_names() -> impl Iterator<Item = &'static str> {
    TASKS.iter().map(|t| t.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_centre_crop_scales_the_shorter_side() {
        let fit = Fit::CenterCrop { short: 256 };
        // 1920x1080 -> 455x256 (455.1 truncated), then the centre 224².
        assert_eq!(fit.scaled_size(1920, 1080, 224, 224), (455, 256));
        assert_eq!(fit.scaled_size(1080, 1920, 224, 224), (256, 455));
        assert_eq!(fit.scaled_size(640, 480, 224, 224), (341, 256));
        // Degenerate frames still cover the crop.
        assert_eq!(fit.scaled_size(1, 1, 224, 224), (256, 256));
        assert_eq!(fit.scaled_size(4000, 1, 224, 224), (4096, 256));
        assert_eq!(Fit::Stretch.scaled_size(641, 359, 224, 224), (224, 224));
    }
}
