//! One pre-norm transformer layer as both CLIP towers have it:
//! `x + attn(ln1(x))`, then `x + fc2(act(fc1(ln2(x))))`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::Tower;
use crate::models::{
    kernels::{
        gemm::Products,
        linear::{Activation, Linear},
        norm::{LayerNorm, layer_norm},
    },
    vit::Attention,
};

pub struct Layer {
    norm1: LayerNorm,
    attention: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Layer {
    pub fn load(vb: VarBuilder, cfg: &Tower, act: Activation) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let attn = vb.pp("self_attn");
        let part = |name| Linear::load(attn.pp(name), h, h, Activation::Identity, Products::F32);
        Ok(Self {
            norm1: layer_norm(h, eps, vb.pp("layer_norm1"))?,
            attention: Attention::new(
                Linear::stack(&[part("q_proj")?, part("k_proj")?, part("v_proj")?])?,
                part("out_proj")?,
                h,
                cfg.num_attention_heads,
            ),
            norm2: layer_norm(h, eps, vb.pp("layer_norm2"))?,
            fc1: Linear::load(
                vb.pp("mlp.fc1"),
                h,
                cfg.intermediate_size,
                act,
                Products::F32,
            )?,
            fc2: Linear::load(
                vb.pp("mlp.fc2"),
                cfg.intermediate_size,
                h,
                Activation::Identity,
                Products::F32,
            )?,
        })
    }

    /// `mask`: added to the attention scores, as `Attention::forward_residual`.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = self
            .attention
            .forward_residual(&self.norm1.forward(x)?, x, mask)?;
        self.fc2
            .forward_residual(&self.fc1.forward(&self.norm2.forward(&x)?)?, &x)
    }
}

/// The tower's `hidden_act`.
pub fn activation(name: &str) -> Result<Activation> {
    match name {
        "quick_gelu" => Ok(Activation::QuickGelu),
        "gelu" => Ok(Activation::Gelu),
        other => candle_core::bail!("activation {other:?} is not supported"),
    }
}
