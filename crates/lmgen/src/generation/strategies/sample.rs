//! HF `GenerationMixin._sample` (utils.py): the token-by-token loop shared by greedy search and
//! multinomial sampling.
//!
//! Per step: last-position logits -> logits processors (and warpers when sampling) -> next token
//! (`argmax`, or a draw from `softmax`) -> rows already finished get the pad id (only when an EOS
//! criterion exists) -> streamer -> stopping criteria per row. The prompt is run once (prefill),
//! then one token per step through the KV cache. `num_return_sequences` copies each prompt
//! (`repeat_interleave`: all copies of prompt 0 first), each copy sampled independently.

use candle_core::Tensor;

use super::decode_state::DecodeState;
use super::prefill::prefill;
use super::{host_scores, StepInput};
use crate::cache::KvCache;
use crate::error::Result;
use crate::generation::context::GenerationContext;
use crate::generation::device_argmax::DeviceArgmax;
use crate::generation::logits::Scores;
use crate::generation::sampler::softmax;
use crate::generation::stopping::FinishReason;
use crate::generation::{GenerateInput, GenerateOutput, ResolvedGeneration};
use crate::models::CausalLM;
use crate::TokenId;

/// Position ids from the mask, as transformers 5's `_prepare_position_ids_for_generation`:
/// `cumsum(mask) - 1`, padding positions set to 0 (transformers 4 set them to 1). Only a padding
/// token's own output depends on it (learned position embeddings).
pub fn position_ids(mask: Option<&[Vec<u8>]>, b: usize, t: usize) -> Vec<Vec<u32>> {
    match mask {
        None => vec![(0..t as u32).collect(); b],
        Some(mask) => mask
            .iter()
            .map(|row| {
                let mut n = 0u32;
                row.iter()
                    .map(|&m| {
                        n += m as u32;
                        if m == 0 {
                            0
                        } else {
                            n - 1
                        }
                    })
                    .collect()
            })
            .collect(),
    }
}

/// `repeat_interleave(n)` of the rows (HF `_expand_inputs_for_generation`).
pub(crate) fn expand(input: &GenerateInput, n: usize) -> GenerateInput {
    let rep = |rows: &Vec<Vec<TokenId>>| {
        rows.iter()
            .flat_map(|r| std::iter::repeat_n(r.clone(), n))
            .collect()
    };
    GenerateInput {
        input_ids: rep(&input.input_ids),
        attention_mask: input.attention_mask.as_ref().map(|m| {
            m.iter()
                .flat_map(|r| std::iter::repeat_n(r.clone(), n))
                .collect()
        }),
    }
}

/// Greedy search or multinomial sampling over the (expanded) rows of `input`.
pub(crate) fn run(
    model: &dyn CausalLM,
    input: &GenerateInput,
    g: &ResolvedGeneration,
    ctx: GenerationContext<'_, '_>,
) -> Result<GenerateOutput> {
    // The one-token steps through a captured CUDA graph where the model and cache allow
    // (the cache holds `max_length - 1` tokens: the last one is never fed back).
    let max_len = g.lengths.max_length.saturating_sub(1);
    let mut graph = crate::cuda::graph::DecodeGraph::new(model, max_len);
    let out = run_with_step(
        model,
        input,
        g,
        ctx,
        &mut |model, step_ids, state, cache| {
            let step = StepInput {
                output_hidden_states: g.output_hidden_states,
                output_attentions: g.output_attentions,
                ..StepInput::last(step_ids, state.positions(), state.mask())
            }
            .with_sequences(&state.sequences);
            // The first step runs the whole prompt: in chunks with `prefill_chunk_size`.
            let out = if cache.seq_len() == 0 {
                prefill(model, step, g.prefill_chunk_size, cache)?
            } else {
                graph.step(model, step, cache)?
            };
            Ok(StepLogits {
                logits: out.logits.squeeze(1)?, // [rows, 1, vocab] -> [rows, vocab]
                host: None,
                adjusted: None,
                hidden_states: out.hidden_states,
                attentions: out.attentions,
            })
        },
    );
    let (steps, replays) = graph.counts();
    if steps > 0 {
        tracing::debug!(
            steps,
            replays,
            "decode steps through device positions (replayed graphs)"
        );
    }
    out
}

/// The next-token logits of one step of [`run_with_step`].
pub(super) struct StepLogits {
    /// The model's raw last-position logits, `[rows, vocab]` f32 on the model's device
    /// (`output_logits`).
    pub logits: Tensor,
    /// `logits` already copied to the host, when the step needed them there (DoLa), so the loop
    /// does not copy them again.
    pub host: Option<Scores>,
    /// What the processors get instead of `logits`, if anything (DoLa's layer contrast).
    pub adjusted: Option<Scores>,
    /// The step's hidden states, when the loop returns them (`output_hidden_states`).
    pub hidden_states: Option<Vec<Tensor>>,
    /// The step's attention weights, when the loop returns them (`output_attentions`).
    pub attentions: Option<Vec<Tensor>>,
}

/// One forward step: the model over `step_ids` (`[rows, t_step]`) at the state's positions and
/// mask, appending to the cache.
pub(super) type Step<'s> =
    dyn FnMut(&dyn CausalLM, &Tensor, &DecodeState, &mut dyn KvCache) -> Result<StepLogits> + 's;

/// The `_sample` loop over the (already expanded) rows of `input`, with `step` computing each
/// step's logits: greedy search and sampling read the model's logits, DoLa contrasts layers.
pub(super) fn run_with_step(
    model: &dyn CausalLM,
    input: &GenerateInput,
    g: &ResolvedGeneration,
    ctx: GenerationContext<'_, '_>,
    step: &mut Step<'_>,
) -> Result<GenerateOutput> {
    let GenerationContext {
        processors,
        mut stopping,
        mut sampler,
        mut streamer,
        mut outputs,
        ..
    } = ctx;
    let t = g.prompt_len;
    let vocab_size = model.config().vocab_size;
    let device = model.device().clone();
    let mut cache = g.new_cache();
    let mut state = DecodeState::new(input, g);
    if let Some(s) = streamer.as_mut() {
        s.put(&state.sequences[0])?;
    }
    // [b, t]
    let mut step_ids: Tensor = Tensor::new(state.sequences.clone(), &device)?;
    // Greedy search with nothing to apply to or return of the scores only needs each row's
    // argmax: on a GPU take it there, so the logits never cross to the host.
    let device_argmax = if !device.is_cpu()
        && !g.mode.do_sample()
        && g.confidence_threshold.is_none()
        && processors.is_empty()
        && !g.output_scores
        && !g.output_logits
    {
        Some(DeviceArgmax::new(vocab_size, &device)?)
    } else {
        None
    };
    let mut confidence_row = None;
    loop {
        let StepLogits {
            logits,
            host,
            adjusted,
            hidden_states,
            attentions,
        } = step(model, &step_ids, &state, cache.as_mut())?;
        outputs.push_model_outputs(hidden_states, attentions);
        let mut next = match (device_argmax.as_ref(), adjusted) {
            (Some(argmax), None) => argmax.select(&logits)?,
            (_, adjusted) => {
                let logits = match host {
                    Some(host) => host,
                    None => host_scores(&logits)?,
                };
                let mut scores = match adjusted {
                    Some(adjusted) => {
                        outputs.push_logits(|| logits);
                        adjusted
                    }
                    None => {
                        outputs.push_logits(|| logits.clone());
                        logits
                    }
                };
                processors.process(&state.sequences, &mut scores)?;
                let next = sampler.select(&scores)?;
                if g.confidence_threshold.is_some() {
                    confidence_row = softmax(scores.row(0));
                }
                outputs.push_scores(|| scores);
                next
            }
        };
        if state.push(&mut next, streamer.as_deref_mut(), &mut stopping)? {
            break;
        }
        // HF `ConfidenceCriteria` (`is_assistant`): the probability row 0 gave the token it got;
        // below the threshold every row stops.
        if let (Some(threshold), Some(probs)) = (g.confidence_threshold, confidence_row.take()) {
            if probs
                .get(next[0] as usize)
                .is_some_and(|&p| p < f64::from(threshold))
            {
                state.finish_all(FinishReason::Confidence);
                break;
            }
        }
        // Finished rows are fed the pad id next; transformers fails there with an IndexError.
        state.check_pad_fed(vocab_size)?;
        state.extend();
        step_ids = Tensor::new(next.iter().map(|&x| vec![x]).collect::<Vec<_>>(), &device)?;
        // [b, 1]
    }
    if let Some(s) = streamer.as_mut() {
        s.end()?;
    }
    tracing::debug!(
        steps = state.sequences[0].len() - t,
        cached = cache.seq_len(),
        "decoding done"
    );
    Ok(GenerateOutput {
        sequences: state.sequences,
        scores: outputs.scores,
        logits: outputs.logits,
        hidden_states: outputs.hidden_states,
        attentions: outputs.attentions,
        finish_reasons: state.finish,
        prompt_len: t,
        sequences_scores: None,
        beam_indices: None,
        assisted: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_the_mask() {
        let m = vec![vec![0, 0, 1, 1], vec![1, 1, 1, 1]];
        assert_eq!(
            position_ids(Some(&m), 2, 4),
            vec![vec![0, 0, 0, 1], vec![0, 1, 2, 3]]
        );
    }

    #[test]
    fn expand_repeats_each_row_in_place() {
        let input = GenerateInput {
            input_ids: vec![vec![1, 2], vec![3, 4]],
            attention_mask: Some(vec![vec![1, 1], vec![0, 1]]),
        };
        let e = expand(&input, 2);
        assert_eq!(
            e.input_ids,
            vec![vec![1, 2], vec![1, 2], vec![3, 4], vec![3, 4]]
        );
        assert_eq!(e.attention_mask.unwrap()[2], vec![0, 1]);
    }
}
