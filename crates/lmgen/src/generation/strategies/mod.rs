//! Decoding strategies, one per file (HF `GenerationMixin._sample`, `_beam_search`, ...).

pub mod beam;
mod beam_hypotheses;
mod beam_settings;
pub mod constrained_beam;
pub mod group_beam;
mod prepare;
mod rows;
pub mod sample;

use candle_core::Tensor;

use crate::cache::KvCache;
use crate::error::Result;
use crate::generation::logits::Scores;
use crate::models::{CausalLM, ForwardInput, LogitsToKeep};

/// One forward step of a decoding loop: the model over `step_ids` (`[rows, t_step]`) at
/// `positions`, appending to `cache`; returns the last position's raw logits on the host,
/// `[rows, vocab]` f32 (what processors and samplers work on).
pub(crate) fn next_token_logits(
    model: &dyn CausalLM,
    step_ids: &Tensor,
    positions: &[Vec<u32>],
    mask: Option<&[Vec<u8>]>,
    cache: &mut dyn KvCache,
) -> Result<Scores> {
    let logits = last_logits(model, step_ids, positions, mask, cache)?;
    let (rows, vocab) = logits.dims2()?;
    let logits: Vec<f32> = logits.flatten_all()?.to_vec1()?; // [rows * vocab]
    Ok(Scores::new(logits, rows, vocab))
}

/// [`next_token_logits`] without the copy to the host: `[rows, vocab]` f32 on the model's device.
pub(crate) fn last_logits(
    model: &dyn CausalLM,
    step_ids: &Tensor,
    positions: &[Vec<u32>],
    mask: Option<&[Vec<u8>]>,
    cache: &mut dyn KvCache,
) -> Result<Tensor> {
    // [rows, t_step], on the host: RoPE angles are computed there (see `ForwardInput`).
    let pos = Tensor::new(positions.to_vec(), &candle_core::Device::Cpu)?;
    let out = model.forward(
        &ForwardInput {
            input_ids: step_ids,
            position_ids: &pos,
            attention_mask: mask,
            logits_to_keep: LogitsToKeep::Last,
        },
        cache,
    )?;
    Ok(out.logits.squeeze(1)?) // [rows, 1, vocab] -> [rows, vocab]
}
