//! `embed.null`, `embed.null-384`: no model. Zero embeddings of 1,280
//! values, at once: what the pipeline carries when compute costs nothing.
//! For benchmarks and tests only.

use super::{Images, Model, Outputs};

pub const DIM: usize = 1280;

pub struct Null {
    side: usize,
}

impl Null {
    pub fn new(side: usize) -> Self {
        Self { side }
    }
}

impl Model for Null {
    fn name(&self) -> &str {
        "null"
    }

    fn input_size(&self) -> (usize, usize) {
        (self.side, self.side)
    }

    fn embedding_dim(&self) -> usize {
        DIM
    }

    fn infer(&self, images: Images<'_>) -> candle_core::Result<Outputs> {
        Ok(Outputs {
            dim: DIM,
            embeddings: vec![0.0; images.count * DIM],
            ..Outputs::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Backend;

    #[test]
    fn null_tasks_need_no_files_and_return_zeros_at_their_size() {
        assert_eq!(
            Backend::for_task("embed.null-384"),
            Some(Backend::Null { side: 384 })
        );
        assert!(Backend::Null { side: 224 }.files().is_empty());
        let model = Null::new(224);
        let pixels = vec![9u8; 2 * 224 * 224 * 3];
        let out = model
            .infer(Images {
                pixels: &pixels,
                count: 2,
                width: 224,
                height: 224,
            })
            .expect("infers");
        assert_eq!((out.dim, out.embeddings.len()), (DIM, 2 * DIM));
        assert!(out.embeddings.iter().all(|v| *v == 0.0));
    }
}
