//! Decoding strategies, one per file (HF `GenerationMixin._sample`, `_beam_search`, ...).

pub mod assisted;
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
    let step = Step {
        positions,
        mask,
        logits_to_keep: LogitsToKeep::Last,
        num_hidden_layers: None,
    };
    step_logits(model, step_ids, &step, cache)
}

/// How a forward step runs, besides its token ids.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step<'a> {
    /// `[rows][t_step]` position ids.
    pub positions: &'a [Vec<u32>],
    /// Padding mask over cached and new tokens, `[rows][past + t_step]`; `None`: no padding.
    pub mask: Option<&'a [Vec<u8>]>,
    pub logits_to_keep: LogitsToKeep,
    /// Early exit after this many decoder layers (`None`: all).
    pub num_hidden_layers: Option<usize>,
}

/// [`next_token_logits`] for any [`Step`]: the kept positions' raw logits on the host, row-major
/// `[rows * t_kept, vocab]` f32 (row `r`'s kept positions are consecutive).
pub(crate) fn step_logits(
    model: &dyn CausalLM,
    step_ids: &Tensor,
    step: &Step<'_>,
    cache: &mut dyn KvCache,
) -> Result<Scores> {
    let pos = Tensor::new(step.positions.to_vec(), step_ids.device())?; // [rows, t_step]
    let out = model.forward(
        &ForwardInput {
            input_ids: step_ids,
            position_ids: &pos,
            attention_mask: step.mask,
            logits_to_keep: step.logits_to_keep,
            num_hidden_layers: step.num_hidden_layers,
        },
        cache,
    )?;
    let (rows, kept, vocab) = out.logits.dims3()?;
    let logits: Vec<f32> = out.logits.flatten_all()?.to_vec1()?; // [rows * kept * vocab]
    Ok(Scores::new(logits, rows * kept, vocab))
}
