//! Decoding strategies, one per file (HF `GenerationMixin._sample`, `_beam_search`, ...).

pub mod assisted;
pub(crate) mod beam;
mod beam_hypotheses;
pub(crate) mod constrained_beam;
pub(crate) mod contrastive;
mod decode_state;
pub(crate) mod dola;
pub(crate) mod group_beam;
pub(crate) mod prefill;
mod rows;
pub(crate) mod sample;

use candle_core::Tensor;

use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::generation::logits::Scores;
use crate::models::{CausalLM, ForwardInput, LogitsToKeep, ModelOutput};
use crate::TokenId;

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
    /// Also return every attention layer's weights (eager attention only).
    pub output_attentions: bool,
    /// Which positions get logits (`Last` in plain decoding).
    pub logits_to_keep: LogitsToKeep,
    /// Early exit after this many decoder layers (`None`: all).
    pub num_hidden_layers: Option<usize>,
    /// `[rows][past + t_step]`: every token of each row, this step's last, when the loop keeps
    /// them (a model that must run the whole sequence again needs them:
    /// [`crate::models::ModelConfig::recompute_cache_at`]).
    pub sequences: Option<&'a [Vec<TokenId>]>,
}

impl<'a> StepInput<'a> {
    /// The plain decoding step: every layer, the last position's logits, no hidden states.
    pub fn last(ids: &'a Tensor, positions: &'a [Vec<u32>], mask: Option<&'a [Vec<u8>]>) -> Self {
        Self {
            ids,
            positions,
            mask,
            output_hidden_states: false,
            output_attentions: false,
            logits_to_keep: LogitsToKeep::Last,
            num_hidden_layers: None,
            sequences: None,
        }
    }

    /// This step with the rows' full token sequences.
    pub fn with_sequences(self, sequences: &'a [Vec<TokenId>]) -> Self {
        Self {
            sequences: Some(sequences),
            ..self
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
    if let Some(at) = model.config().recompute_cache_at {
        let (past, t) = (cache.seq_len(), step.ids.dim(1)?);
        if past > 0 && past <= at && past + t > at {
            return recompute(model, step, at, cache);
        }
    }
    // [rows, t_step], on the host: RoPE angles are computed there (see `ForwardInput`).
    let pos = Tensor::new(step.positions.to_vec(), &candle_core::Device::Cpu)?;
    model.forward(
        &ForwardInput {
            input_ids: step.ids,
            position_ids: &pos,
            attention_mask: step.mask,
            logits_to_keep: step.logits_to_keep,
            output_hidden_states: step.output_hidden_states,
            output_attentions: step.output_attentions,
            num_hidden_layers: step.num_hidden_layers,
            device_positions: None,
        },
        cache,
    )
}

/// The step that takes the sequence past `at` tokens on a model whose cache must then be rebuilt
/// (Phi-3's LongRoPE switch): the cache is emptied and the whole sequence runs again, positions
/// `cumsum(mask) - 1`; the step's positions are kept, as a plain step would.
fn recompute(
    model: &dyn CausalLM,
    step: StepInput<'_>,
    at: usize,
    cache: &mut dyn KvCache,
) -> Result<ModelOutput> {
    let Some(sequences) = step.sequences else {
        return Err(Error::unsupported(format!(
            "this model runs the whole sequence again once it passes {at} tokens \
             (`original_max_position_embeddings` of its LongRoPE, as transformers' Phi-3 does), \
             which this decoding mode does not do yet; keep prompt + new tokens within {at} or \
             start from a prompt already longer than that"
        )));
    };
    let (rows, t) = (sequences.len(), sequences.first().map_or(0, Vec::len));
    let t_step = step.ids.dim(1)?;
    cache.crop(0)?;
    let ids = Tensor::new(sequences.to_vec(), model.device())?; // [rows, t]
    let positions = sample::position_ids(step.mask, rows, t);
    let keep = match step.logits_to_keep {
        LogitsToKeep::All => LogitsToKeep::LastN(t_step),
        other => other,
    };
    let mut out = forward_step(
        model,
        StepInput {
            ids: &ids,
            positions: &positions,
            logits_to_keep: keep,
            sequences: None,
            ..step
        },
        cache,
    )?;
    if let Some(states) = out.hidden_states.as_mut() {
        for h in states.iter_mut() {
            *h = h.narrow(1, t - t_step, t_step)?; // [rows, t, h] -> [rows, t_step, h]
        }
    }
    if let Some(weights) = out.attentions.as_mut() {
        for a in weights.iter_mut() {
            *a = a.narrow(2, t - t_step, t_step)?; // [rows, nh, t, t] -> [rows, nh, t_step, t]
        }
    }
    Ok(out)
}

/// [`forward_step`] without hidden states, returning the last position's raw logits on the host,
/// `[rows, vocab]` f32 (what processors and samplers work on).
pub(crate) fn next_token_logits(
    model: &dyn CausalLM,
    step: StepInput<'_>,
    cache: &mut dyn KvCache,
) -> Result<Scores> {
    host_scores(&last_logits(model, step, cache)?)
}

/// [`next_token_logits`] without the copy to the host: `[rows, vocab]` f32 on the model's device.
pub(crate) fn last_logits(
    model: &dyn CausalLM,
    step: StepInput<'_>,
    cache: &mut dyn KvCache,
) -> Result<Tensor> {
    let out = forward_step(model, step, cache)?;
    Ok(out.logits.squeeze(1)?) // [rows, 1, vocab] -> [rows, vocab]
}

/// Logits as host scores: `[rows, vocab]`, or `[rows, kept, vocab]` as `[rows * kept, vocab]`
/// (row `r`'s kept positions consecutive); f32 on any device.
pub(crate) fn host_scores(logits: &Tensor) -> Result<Scores> {
    let (rows, vocab) = match logits.dims() {
        &[r, k, v] => (r * k, v),
        _ => logits.dims2()?,
    };
    // [rows * vocab], from a GPU through a page-locked buffer (`readback`).
    let data = crate::readback::to_host_f32(logits)?;
    Ok(Scores::new(data, rows, vocab))
}
