//! BLIP's caption decoder: a post-norm BERT with causal self-attention and
//! cross-attention to the image tokens (`text_decoder.*` in the checkpoint).
//!
//! Built for batched greedy decoding: every row of a batch shares one KV
//! cache with a batch dimension, and the cross-attention keys and values of
//! the image tokens are computed once per batch (`ImageContext`) instead of
//! at every step as transformers and candle-transformers do.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder, embedding, kv_cache::KvCache};

use super::config::TextConfig;
use crate::models::kernels::{
    attention::{PackedKv, attend},
    gemm::Products,
    heads::{merge_heads, split_heads},
    linear::{Activation, Linear},
    norm::{LayerNorm, layer_norm},
};

/// `[B, N, H·D]` → `[B, H, N, D]`, times `scale`.
fn split(x: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    Ok(split_heads(x, 1, heads, scale)?.remove(0))
}

/// Dense + residual + LayerNorm, BERT's `*.output` blocks.
struct AddNorm {
    dense: Linear,
    norm: LayerNorm,
}

impl AddNorm {
    fn load(
        vb: VarBuilder,
        in_dim: usize,
        hidden: usize,
        eps: f64,
        products: Products,
    ) -> Result<Self> {
        Ok(Self {
            dense: Linear::load(
                vb.pp("dense"),
                in_dim,
                hidden,
                Activation::Identity,
                products,
            )?,
            norm: layer_norm(hidden, eps, vb.pp("LayerNorm"))?,
        })
    }

    fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.norm
            .forward(&self.dense.forward_residual(x, residual)?)
    }
}

struct Layer {
    /// Query, key and value as one GEMM.
    qkv: Linear,
    self_out: AddNorm,
    cross_query: Linear,
    /// The image tokens' keys and values as one GEMM.
    cross_kv: Linear,
    cross_out: AddNorm,
    intermediate: Linear,
    output: AddNorm,
    heads: usize,
    scale: f64,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &TextConfig, products: Products) -> Result<Self> {
        let (h, e, eps) = (cfg.hidden_size, cfg.encoder_hidden_size, cfg.layer_norm_eps);
        let lin = |vb: VarBuilder, i, o| Linear::load(vb, i, o, Activation::Identity, products);
        let (sa, ca) = (vb.pp("attention"), vb.pp("crossattention"));
        Ok(Self {
            qkv: Linear::stack(&[
                lin(sa.pp("self.query"), h, h)?,
                lin(sa.pp("self.key"), h, h)?,
                lin(sa.pp("self.value"), h, h)?,
            ])?,
            self_out: AddNorm::load(sa.pp("output"), h, h, eps, products)?,
            cross_query: lin(ca.pp("self.query"), h, h)?,
            cross_kv: Linear::stack(&[
                lin(ca.pp("self.key"), e, h)?,
                lin(ca.pp("self.value"), e, h)?,
            ])?,
            cross_out: AddNorm::load(ca.pp("output"), h, h, eps, products)?,
            intermediate: Linear::load(
                vb.pp("intermediate.dense"),
                h,
                cfg.intermediate_size,
                Activation::Gelu,
                products,
            )?,
            output: AddNorm::load(vb.pp("output"), cfg.intermediate_size, h, eps, products)?,
            heads: cfg.num_attention_heads,
            scale: ((h / cfg.num_attention_heads) as f64).powf(-0.5),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cache: &mut KvCache,
        image: &ImageKv,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let qkv = split_heads(&self.qkv.forward(x)?, 3, self.heads, self.scale)?;
        let (k, v) = cache.append(&qkv[1], &qkv[2])?;
        let attended = merge_heads(&attend(&qkv[0], &k, &v, mask)?)?;
        let x = self.self_out.forward(&attended, x)?;

        let q = split(&self.cross_query.forward(&x)?, self.heads, self.scale)?;
        let attended = match image {
            ImageKv::Packed(packed) => packed.attend(&q)?,
            ImageKv::Tensors(keys, values) => attend(&q, keys, values, None)?,
        };
        let attended = merge_heads(&attended)?;
        let x = self.cross_out.forward(&attended, &x)?;

        self.output.forward(&self.intermediate.forward(&x)?, &x)
    }
}

/// Per-batch state of one generation: the self-attention caches, and the
/// cross-attention keys and values of the image tokens, per layer.
pub struct ImageContext {
    caches: Vec<KvCache>,
    image: Vec<ImageKv>,
    position: usize,
}

/// One layer's cross-attention keys and values, `[B, H, N, D]`.
enum ImageKv {
    /// On the CPU in f32: packed once for the GEMM every step runs on them.
    Packed(PackedKv),
    Tensors(Tensor, Tensor),
}

pub struct TextDecoder {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    transform: Linear,
    transform_norm: LayerNorm,
    /// The vocabulary's logits: its weight is tied to the word embeddings
    /// unless stored apart. On the CPU, packed once like every dense
    /// layer (candle's matmul packed all 94 MB of BLIP's at every step).
    lm_head: Linear,
    vocab_size: usize,
    max_positions: usize,
}

impl TextDecoder {
    /// `products`: how its dense layers multiply on the CPU.
    pub fn load(vb: VarBuilder, cfg: &TextConfig, products: Products) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let emb = vb.pp("bert.embeddings");
        let word_embeddings = embedding(cfg.vocab_size, h, emb.pp("word_embeddings"))?;
        let head = vb.pp("cls.predictions");
        let lm_weight = if head.contains_tensor("decoder.weight") {
            head.get((cfg.vocab_size, h), "decoder.weight")?
        } else {
            word_embeddings.embeddings().clone()
        };
        Ok(Self {
            position_embeddings: embedding(
                cfg.max_position_embeddings,
                h,
                emb.pp("position_embeddings"),
            )?,
            word_embeddings,
            embed_norm: layer_norm(h, eps, emb.pp("LayerNorm"))?,
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::load(vb.pp(format!("bert.encoder.layer.{i}")), cfg, products))
                .collect::<Result<_>>()?,
            transform: Linear::load(head.pp("transform.dense"), h, h, Activation::Gelu, products)?,
            transform_norm: layer_norm(h, eps, head.pp("transform.LayerNorm"))?,
            lm_head: Linear::with_products(
                lm_weight,
                head.get(cfg.vocab_size, "bias")?,
                Activation::Identity,
                products,
            )?,
            vocab_size: cfg.vocab_size,
            max_positions: cfg.max_position_embeddings,
        })
    }

    /// Fails unless `[DEC]`, a prompt of `prompt` tokens and `new` more fit
    /// the position embeddings.
    pub fn check_fits(&self, prompt: usize, new: usize) -> Result<()> {
        if 1 + prompt + new > self.max_positions {
            candle_core::bail!(
                "a prompt of {prompt} tokens plus {new} new tokens exceeds the decoder's {} positions",
                self.max_positions
            );
        }
        Ok(())
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The dtype of its weights, and so of its logits.
    pub fn dtype(&self) -> DType {
        self.lm_head.dtype()
    }

    /// Projects the image tokens `[B, N, E]` once for every layer.
    pub fn image_context(&self, image_embeds: &Tensor, max_len: usize) -> Result<ImageContext> {
        let image = self
            .layers
            .iter()
            .map(|l| {
                let kv = split_heads(&l.cross_kv.forward(image_embeds)?, 2, l.heads, 1.0)?;
                Ok(
                    match PackedKv::new(&kv[0], &kv[1], l.cross_kv.products())? {
                        Some(packed) => ImageKv::Packed(packed),
                        None => ImageKv::Tensors(kv[0].clone(), kv[1].clone()),
                    },
                )
            })
            .collect::<Result<_>>()?;
        Ok(ImageContext {
            caches: self
                .layers
                .iter()
                .map(|_| KvCache::new(2, max_len))
                .collect(),
            image,
            position: 0,
        })
    }

    /// Feeds `ids` `[B, T]` after what `ctx` has seen; returns the
    /// next-token logits of the last position, `[B, vocab]`.
    pub fn step(&self, ids: &Tensor, ctx: &mut ImageContext) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let device = ids.device();
        let positions = Tensor::arange(ctx.position as u32, (ctx.position + t) as u32, device)?;
        let x = self
            .word_embeddings
            .forward(ids)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?;
        let mut x = self.embed_norm.forward(&x)?;
        // Causal mask over the new positions only; earlier ones are all visible.
        let mask = if t > 1 {
            let past = ctx.position;
            let m: Vec<f32> = (0..t)
                .flat_map(|i| {
                    (0..past + t).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            Some(Tensor::from_vec(m, (t, past + t), device)?.to_dtype(x.dtype())?)
        } else {
            None
        };
        for ((layer, cache), image) in self.layers.iter().zip(&mut ctx.caches).zip(&ctx.image) {
            x = layer.forward(&x, cache, image, mask.as_ref())?;
        }
        ctx.position += t;
        let last = x.narrow(1, t - 1, 1)?.squeeze(1)?;
        let h = self
            .transform_norm
            .forward(&self.transform.forward(&last)?)?;
        self.lm_head.forward(&h)
    }
}
