use candle_core::{D, Module, Result, Tensor};
use candle_nn::{VarBuilder, ops::softmax};
use schema::Label;

use crate::models::kernels::{
    gemm::Products,
    linear::{Activation, Linear},
};

/// A linear classification head on the pooled embedding, reporting the
/// top-k classes by name. Its weights are packed once, at load
/// (`kernels/linear.rs`): candle's matmul packed all 1.3 M of them on
/// every batch.
pub struct Classifier {
    linear: Linear,
    names: Vec<String>,
    top_k: usize,
}

impl Classifier {
    pub fn new(vb: VarBuilder, dim: usize, names: Vec<String>, top_k: usize) -> Result<Self> {
        let linear = Linear::load(vb, dim, names.len(), Activation::Identity, Products::F32)?;
        Ok(Self {
            linear,
            names,
            top_k,
        })
    }

    /// `embeddings`: [B, dim] → top-k labels per row, best first.
    pub fn top_k(&self, embeddings: &Tensor) -> Result<Vec<Vec<Label>>> {
        let probs = softmax(&self.linear.forward(embeddings)?, D::Minus1)?.to_vec2::<f32>()?;
        Ok(probs
            .into_iter()
            .map(|row| {
                // The best k in order, without sorting all the classes
                // (16 µs for ImageNet's 1000, against 2-4 to select 5).
                let mut order: Vec<usize> = (0..row.len()).collect();
                let best_first = |&a: &usize, &b: &usize| row[b].total_cmp(&row[a]);
                if self.top_k < order.len() {
                    order.select_nth_unstable_by(self.top_k, best_first);
                    order.truncate(self.top_k);
                }
                order.sort_unstable_by(best_first);
                order
                    .into_iter()
                    .take(self.top_k)
                    .map(|class| Label {
                        class: class as u32,
                        name: self.names[class].clone(),
                        score: row[class],
                    })
                    .collect()
            })
            .collect())
    }
}
