//! DoLa decoding (transformers 4.47 `GenerationMixin._dola_decoding` and `_dola_select_contrast`,
//! `generation/utils.py`; "DoLa: Decoding by Contrasting Layers Improves Factuality in Large
//! Language Models", <https://arxiv.org/abs/2309.03883>). transformers 5 moved it to the Hub repo
//! `transformers-community/dola`.
//!
//! The `_sample` loop (greedy or sampling, same processors and stopping criteria), except for the
//! logits each step: the model runs with every layer's hidden states, the LM head alone (no final
//! norm, no soft-capping, as transformers) turns each candidate premature layer's last hidden state
//! into logits, and the next-token logits are the final layer's log-probabilities minus the
//! premature layer's ([`select_contrast`]). With several candidates, the premature layer is the one
//! whose distribution is furthest (Jensen-Shannon divergence, averaged over the batch) from the
//! final layer's. `output_logits` records the final layer's raw logits, `output_scores` the
//! processed contrast, as transformers.
//!
//! Differences from transformers: `num_return_sequences > 1` is an error (transformers 4.47 does
//! not expand the prompts for DoLa and silently returns one sequence per prompt); premature logits
//! are computed in f32 whatever the compute dtype (transformers keeps them in the model's dtype).

use super::decode_state::DecodeState;
use super::prefill::prefill;
use super::sample::{run_with_step, StepLogits};
use super::{forward_step, host_scores, StepInput};
use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::generation::context::GenerationContext;
use crate::generation::logits::Scores;
use crate::generation::resolve::Dola;
use crate::generation::{GenerateInput, GenerateOutput, ResolvedGeneration};
use crate::models::CausalLM;
use crate::models::LogitsToKeep;

/// `_relative_top_filter`'s `relative_top`: tokens below a tenth of the top probability of the
/// final layer are dropped.
const RELATIVE_TOP: f64 = 0.1;
/// `_relative_top_filter`'s `base_filter_value`.
const BASE_FILTER_VALUE: f32 = -1e-3;

/// DoLa decoding over `input` (`dola_layers` set, `num_beams=1`).
pub(crate) fn run(
    model: &dyn CausalLM,
    input: &GenerateInput,
    g: &ResolvedGeneration,
    ctx: GenerationContext<'_, '_>,
    settings: &Dola,
) -> Result<GenerateOutput> {
    let candidates = &settings.premature_layers;
    run_with_step(
        model,
        input,
        g,
        ctx,
        &mut |model: &dyn CausalLM,
              step_ids: &candle_core::Tensor,
              state: &DecodeState,
              cache: &mut dyn KvCache| {
            let step = StepInput {
                ids: step_ids,
                positions: state.positions(),
                mask: state.mask(),
                output_hidden_states: true,
                output_attentions: false,
                logits_to_keep: LogitsToKeep::Last,
                num_hidden_layers: None,
                sequences: Some(&state.sequences),
            };
            // The prompt in chunks with `prefill_chunk_size`: DoLa reads the last position only.
            let out = if cache.seq_len() == 0 {
                prefill(model, step, g.prefill_chunk_size, cache)?
            } else {
                forward_step(model, step, cache)?
            };
            let hidden = out.hidden_states.as_deref().unwrap_or_default();
            let premature = candidates
                .iter()
                .map(|&layer| {
                    let h = hidden.get(layer).ok_or_else(|| {
                        Error::input(format!(
                            "DoLa needs hidden state {layer}, the model returned {}",
                            hidden.len()
                        ))
                    })?; // [b, t, hidden]
                    let last = h.narrow(1, h.dim(1)? - 1, 1)?; // [b, 1, hidden]
                    host_scores(&model.lm_head(&last)?) // [b, vocab]
                })
                .collect::<Result<Vec<_>>>()?;
            let host = host_scores(&out.logits)?; // [b, vocab]
            let contrast = select_contrast(&premature, &host);
            Ok(StepLogits {
                logits: out.logits.squeeze(1)?, // [b, vocab]
                host: Some(host),
                adjusted: Some(contrast),
                hidden_states: None,
                attentions: None,
            })
        },
    )
}

/// `_dola_select_contrast`: the premature layer (the only candidate, or the one with the largest
/// Jensen-Shannon divergence from the final layer, averaged over the batch; the first on ties),
/// then the relative-top-filtered difference of log-probabilities, `[b, vocab]`.
pub fn select_contrast(premature: &[Scores], final_logits: &Scores) -> Scores {
    let chosen = if premature.len() == 1 {
        0
    } else {
        let js: Vec<f64> = premature
            .iter()
            .map(|p| js_divergence_batch_mean(final_logits, p))
            .collect();
        // torch.argmax: the first maximum.
        let mut best = 0;
        for (i, &d) in js.iter().enumerate() {
            if d > js[best] {
                best = i;
            }
        }
        best
    };
    let base = &premature[chosen];
    let mut out = Vec::with_capacity(final_logits.data.len());
    for i in 0..final_logits.batch {
        let (scores, baseline) = relative_top_filter(final_logits.row(i), base.row(i));
        out.extend(scores.iter().zip(&baseline).map(|(s, b)| s - b));
    }
    Scores::new(out, final_logits.batch, final_logits.vocab)
}

/// `log_softmax` as torch computes it in f32: `x - max - log(sum(exp(x - max)))`.
fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    let shift = max + sum.ln();
    row.iter().map(|&x| x - shift).collect()
}

/// `_relative_top_filter(scores, baseline)`: both log-softmaxed; where the final layer's
/// log-probability is below `max + log(relative_top)`, the final one becomes `-inf` and the
/// baseline `base_filter_value`.
fn relative_top_filter(scores: &[f32], baseline: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut scores = log_softmax(scores);
    let mut baseline = log_softmax(baseline);
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // min(sorted[min_tokens_to_keep - 1], max + log(relative_top)), min_tokens_to_keep = 1.
    let threshold = max.min(max + RELATIVE_TOP.ln() as f32);
    for (s, b) in scores.iter_mut().zip(baseline.iter_mut()) {
        if *s < threshold {
            *b = BASE_FILTER_VALUE;
            *s = f32::NEG_INFINITY;
        }
    }
    (scores, baseline)
}

/// The Jensen-Shannon divergence between the final and a premature layer's next-token
/// distributions, `0.5 * (KL(m || final) + KL(m || premature))` with `m` their average (as
/// `F.kl_div(log_p, m).mean(-1)`, i.e. averaged over the vocabulary), averaged over the batch.
fn js_divergence_batch_mean(final_logits: &Scores, premature: &Scores) -> f64 {
    let rows = final_logits.batch;
    let mut total = 0.0f64;
    for i in 0..rows {
        let log_final = log_softmax(final_logits.row(i));
        let log_premature = log_softmax(premature.row(i));
        let (mut kl1, mut kl2) = (0.0f64, 0.0f64);
        for (&lf, &lp) in log_final.iter().zip(&log_premature) {
            let m = 0.5 * (f64::from(lf.exp()) + f64::from(lp.exp()));
            if m > 0.0 {
                // xlogy(m, m) - m * input, as `kl_div(reduction="none")`.
                kl1 += m * (m.ln() - f64::from(lf));
                kl2 += m * (m.ln() - f64::from(lp));
            }
        }
        let vocab = log_final.len().max(1) as f64;
        total += 0.5 * (kl1 / vocab + kl2 / vocab);
    }
    total / rows.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_top_filter_keeps_tokens_within_a_tenth_of_the_top() {
        // probabilities ~ [0.6, 0.3, 0.07, 0.03]: the last is below 0.1 * 0.6.
        let p = [0.6f32, 0.3, 0.07, 0.03];
        let logits: Vec<f32> = p.iter().map(|x| x.ln()).collect();
        let base = [0.0f32; 4];
        let (s, b) = relative_top_filter(&logits, &base);
        assert!(s[..3].iter().all(|x| x.is_finite()));
        assert_eq!(s[3], f32::NEG_INFINITY);
        assert_eq!(b[3], BASE_FILTER_VALUE);
        assert!((b[0] - 0.25f32.ln()).abs() < 1e-6);
        assert!((s[0] - 0.6f32.ln()).abs() < 1e-5);
    }

    #[test]
    fn contrast_picks_the_most_divergent_layer() {
        let final_logits = Scores::new(vec![3.0, 1.0, 0.0], 1, 3);
        let close = Scores::new(vec![2.9, 1.0, 0.1], 1, 3);
        let far = Scores::new(vec![0.0, 0.0, 3.0], 1, 3);
        let out = select_contrast(&[close.clone(), far.clone()], &final_logits);
        assert_eq!(out, select_contrast(&[far], &final_logits));
        assert_ne!(out, select_contrast(&[close], &final_logits));
        // The difference of log-probabilities on kept tokens, -inf on dropped ones.
        let lf = log_softmax(final_logits.row(0));
        let lb = log_softmax(&[0.0, 0.0, 3.0]);
        assert!((out.row(0)[0] - (lf[0] - lb[0])).abs() < 1e-6);
        assert!((out.row(0)[1] - (lf[1] - lb[1])).abs() < 1e-6);
        assert_eq!(out.row(0)[2], f32::NEG_INFINITY);
    }
}
