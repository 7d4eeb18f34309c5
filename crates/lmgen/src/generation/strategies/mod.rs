//! Decoding strategies, one per file (HF `GenerationMixin._sample`, `_beam_search`, ...).

pub mod assisted;
pub mod beam;
mod beam_hypotheses;
mod beam_settings;
pub mod constrained_beam;
pub mod contrastive;
mod decode_state;
pub mod dola;
pub mod group_beam;
mod prepare;
mod rows;
pub mod sample;

use candle_core::Tensor;

use crate::cache::KvCache;
use crate::error::Result;
use crate::generation::logits::Scores;
use crate::models::{CausalLM, ForwardInput, LogitsToKeep, ModelOutput};

/// What one step of a decoding loop feeds the model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepInput<'a> {
    /// `[rows, t_step]` token ids.
    pub ids: &'a Tensor,
    /// `[rows][t_step]` positions.
    pub positions: &'a [Vec<u32>],
    /// `[rows][past + t_step]` padding mask, `None` without padding.
    pub mask: Option<&'a [Vec<u8>]>,
    /// Also return every layer's hidden states.
    pub output_hidden_states: bool,
    /// Which positions get logits (`Last` in plain decoding).
    pub logits_to_keep: LogitsToKeep,
    /// Early exit after this many decoder layers (`None`: all).
    pub num_hidden_layers: Option<usize>,
}

impl<'a> StepInput<'a> {
    /// The plain decoding step: every layer, the last position's logits, no hidden states.
    pub fn last(ids: &'a Tensor, positions: &'a [Vec<u32>], mask: Option<&'a [Vec<u8>]>) -> Self {
        Self {
            ids,
            positions,
            mask,
            output_hidden_states: false,
            logits_to_keep: LogitsToKeep::Last,
            num_hidden_layers: None,
        }
    }
}

/// One forward step of a decoding loop, appending to `cache`: the kept positions' logits, plus
/// every layer's hidden states when asked.
pub(crate) fn forward_step(
    model: &dyn CausalLM,
    step: StepInput<'_>,
    cache: &mut dyn KvCache,
) -> Result<ModelOutput> {
    // [rows, t_step], on the host: RoPE angles are computed there (see `ForwardInput`).
    let pos = Tensor::new(step.positions.to_vec(), &candle_core::Device::Cpu)?;
    model.forward(
        &ForwardInput {
            input_ids: step.ids,
            position_ids: &pos,
            attention_mask: step.mask,
            logits_to_keep: step.logits_to_keep,
            output_hidden_states: step.output_hidden_states,
            num_hidden_layers: step.num_hidden_layers,
        },
        cache,
    )
}

/// [`forward_step`] without hidden states, returning the last position's raw logits on the host,
/// `[rows, vocab]` f32 (what processors and samplers work on).
pub(crate) fn next_token_logits(
    model: &dyn CausalLM,
    step_ids: &Tensor,
    positions: &[Vec<u32>],
    mask: Option<&[Vec<u8>]>,
    cache: &mut dyn KvCache,
) -> Result<Scores> {
    host_scores(&last_logits(model, step_ids, positions, mask, cache)?)
}

/// [`next_token_logits`] without the copy to the host: `[rows, vocab]` f32 on the model's device.
pub(crate) fn last_logits(
    model: &dyn CausalLM,
    step_ids: &Tensor,
    positions: &[Vec<u32>],
    mask: Option<&[Vec<u8>]>,
    cache: &mut dyn KvCache,
) -> Result<Tensor> {
    let out = forward_step(model, StepInput::last(step_ids, positions, mask), cache)?;
    Ok(out.logits.squeeze(1)?) // [rows, 1, vocab] -> [rows, vocab]
}

/// Logits as host scores: `[rows, vocab]`, or `[rows, kept, vocab]` as `[rows * kept, vocab]`
/// (row `r`'s kept positions consecutive); f32 on any device.
pub(crate) fn host_scores(logits: &Tensor) -> Result<Scores> {
    let (rows, vocab) = match logits.dims() {
        &[r, k, v] => (r * k, v),
        _ => logits.dims2()?,
    };
    let data: Vec<f32> = logits.flatten_all()?.to_vec1()?; // [rows * vocab]
    Ok(Scores::new(data, rows, vocab))
}
