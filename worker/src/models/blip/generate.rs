//! Batched greedy decoding.

use candle_core::{D, Device, Result, Tensor};

use super::text::TextDecoder;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Tokens generated per caption at most, `[SEP]` not counted.
    pub max_tokens: usize,
    /// `[SEP]` is suppressed before this many tokens (transformers'
    /// `min_new_tokens`); the benchmark forces fixed-length captions with it.
    pub min_tokens: usize,
}

/// Special token ids of the checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct Specials {
    pub bos: u32,
    pub sep: u32,
    pub pad: u32,
}

/// Greedy captions for a batch of image tokens `[B, N, E]`, each starting
/// with `[DEC]` and the shared `prompt`. Returns the generated ids of each
/// row without the prompt and without its `[SEP]`.
///
/// A row that emitted `[SEP]` keeps riding along (its next input is
/// `[PAD]` and its outputs are dropped) so that the batch keeps one shape
/// and one cache; the loop stops once every row is finished.
pub fn generate(
    decoder: &TextDecoder,
    image_embeds: &Tensor,
    prompt: &[u32],
    specials: Specials,
    limits: Limits,
) -> Result<Vec<Vec<u32>>> {
    let rows = image_embeds.dim(0)?;
    let device = image_embeds.device();
    decoder.check_fits(prompt.len(), limits.max_tokens)?;
    let total = 1 + prompt.len() + limits.max_tokens;
    let mut ctx = decoder.image_context(image_embeds, total)?;
    let start: Vec<u32> = std::iter::once(specials.bos)
        .chain(prompt.iter().copied())
        .collect();
    let mut input = Tensor::new(start.as_slice(), device)?
        .unsqueeze(0)?
        .repeat((rows, 1))?;
    let no_sep = sep_suppressor(decoder, specials.sep, device)?;
    let mut captions = vec![Vec::new(); rows];
    let mut finished = vec![false; rows];
    for step in 0..limits.max_tokens {
        let mut logits = decoder.step(&input, &mut ctx)?;
        if step < limits.min_tokens {
            logits = logits.broadcast_add(&no_sep)?;
        }
        let mut next: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
        for ((token, done), caption) in next.iter_mut().zip(&mut finished).zip(&mut captions) {
            if *done {
                *token = specials.pad;
            } else if *token == specials.sep {
                *done = true;
            } else {
                caption.push(*token);
            }
        }
        if finished.iter().all(|&f| f) {
            break;
        }
        input = Tensor::from_vec(next, (rows, 1), device)?;
    }
    Ok(captions)
}

/// `[vocab]` zeros with −∞ at `[SEP]`, in the logits' dtype.
fn sep_suppressor(decoder: &TextDecoder, sep: u32, device: &Device) -> Result<Tensor> {
    let mut mask = vec![0f32; decoder.vocab_size()];
    if let Some(m) = mask.get_mut(sep as usize) {
        *m = f32::NEG_INFINITY;
    }
    Tensor::from_vec(mask, decoder.vocab_size(), device)?.to_dtype(decoder.dtype())
}
