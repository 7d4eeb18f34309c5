//! Contrastive search (transformers 4.47 `GenerationMixin._contrastive_search` and `_ranking_fast`,
//! `generation/utils.py`; "A Contrastive Framework for Neural Text Generation",
//! <https://arxiv.org/abs/2202.06417>). transformers 5 moved it to the Hub repo
//! `transformers-community/contrastive-search`.
//!
//! Per step: the logits processors run on the selected token's logits, `softmax`, and the `top_k`
//! most likely tokens become candidates. The KV cache is repeated `top_k` times per row
//! ([`KvCache::batch_repeat_interleave`]) and every candidate runs through the model as one batch,
//! which gives its last hidden state (after the final norm). Each candidate scores
//! `(1 - penalty_alpha) * p - penalty_alpha * max cos(h_candidate, h_context)`, the degeneration
//! penalty being the largest cosine similarity with the last hidden state of any earlier
//! non-padding token (prompt included); the best candidate of each row is appended, its cache row
//! kept ([`KvCache::batch_select_indices`]) and its logits feed the next step. `output_scores`
//! records the processed scores, `output_logits` the raw logits, as transformers.
//!
//! Differences from transformers: `low_memory=true` (transformers' sequential candidate loop)
//! runs the same batched computation, which gives the same tokens; cosine similarities are
//! computed in f32 whatever the compute dtype.

use candle_core::{DType, Tensor, D};

use super::decode_state::DecodeState;
use super::prefill::prefill;
use super::{forward_step, host_scores, StepInput};
use crate::error::{Error, Result};
use crate::generation::context::GenerationContext;
use crate::generation::logits::Scores;
use crate::generation::resolve::Contrastive;
use crate::generation::{GenerateInput, GenerateOutput, ResolvedGeneration};
use crate::models::CausalLM;
use crate::models::LogitsToKeep;
use crate::TokenId;

/// Contrastive search over `input` (`penalty_alpha > 0`, `top_k > 1`, `num_beams=1`, greedy).
pub(crate) fn run(
    model: &dyn CausalLM,
    input: &GenerateInput,
    g: &ResolvedGeneration,
    ctx: GenerationContext<'_, '_>,
    settings: &Contrastive,
) -> Result<GenerateOutput> {
    let Contrastive {
        penalty_alpha: alpha,
        top_k,
    } = *settings;
    let GenerationContext {
        processors,
        mut stopping,
        mut streamer,
        mut outputs,
        ..
    } = ctx;
    let (b, t) = (g.rows(), g.prompt_len);
    let device = model.device().clone();
    let mut cache = g.new_cache();
    let mut state = DecodeState::new(input, g);
    if let Some(s) = streamer.as_mut() {
        s.put(&state.sequences[0])?;
    }
    // Prefill: the prompt's last hidden states are the first context of the penalty.
    let prompt = Tensor::new(state.sequences.clone(), &device)?; // [b, t]
    let out = prefill(
        model,
        StepInput {
            ids: &prompt,
            positions: state.positions(),
            mask: state.mask(),
            output_hidden_states: true,
            output_attentions: false,
            logits_to_keep: LogitsToKeep::Last,
            num_hidden_layers: None,
            sequences: Some(&state.sequences),
        },
        g.prefill_chunk_size,
        cache.as_mut(),
    )?;
    let mut context = Context::new(last_hidden(&out)?, input.attention_mask.as_deref())?;
    let mut logits = host_scores(&out.logits)?; // [b, vocab]
    state.extend();
    loop {
        outputs.push_logits(|| logits.clone());
        let mut scores = logits;
        processors.process(&state.sequences, &mut scores)?;
        let candidates = top_k_probs(&scores, top_k); // [b][k]
        outputs.push_scores(|| scores);

        // Every candidate through the model, as `b * k` rows.
        cache.batch_repeat_interleave(top_k)?;
        let ids: Vec<Vec<TokenId>> = candidates
            .iter()
            .flatten()
            .map(|&(id, _)| vec![id])
            .collect();
        let ids = Tensor::new(ids, &device)?; // [b * k, 1]
        let positions = repeat_rows(state.positions(), top_k);
        let mask = state.mask().map(|m| repeat_rows(m, top_k));
        let out = forward_step(
            model,
            StepInput {
                ids: &ids,
                positions: &positions,
                mask: mask.as_deref(),
                output_hidden_states: true,
                output_attentions: false,
                logits_to_keep: LogitsToKeep::Last,
                num_hidden_layers: None,
                // The candidates of every row, run as one batch: a model that must run the
                // whole sequence again refuses this step (see `forward_step`).
                sequences: None,
            },
            cache.as_mut(),
        )?;
        let next_hidden = normalize(&last_hidden(&out)?)?; // [b * k, 1, h]
        let penalties = context.degeneration_penalty(&next_hidden, top_k)?; // [b][k]
        let selected: Vec<usize> = candidates
            .iter()
            .zip(&penalties)
            .map(|(row, pen)| best_candidate(row, pen, alpha))
            .collect();

        // Keep the chosen candidate of each row: its cache row, hidden state and logits.
        let rows: Vec<usize> = selected
            .iter()
            .enumerate()
            .map(|(i, &s)| i * top_k + s)
            .collect();
        cache.batch_select_indices(&rows)?;
        context.push(&next_hidden, &rows)?;
        let candidate_logits = host_scores(&out.logits)?; // [b * k, vocab]
        logits = Scores::new(
            rows.iter()
                .flat_map(|&r| candidate_logits.row(r).iter().copied())
                .collect(),
            b,
            candidate_logits.vocab,
        );
        let mut next: Vec<TokenId> = candidates
            .iter()
            .zip(&selected)
            .map(|(row, &s)| row[s].0)
            .collect();
        if state.push(&mut next, streamer.as_deref_mut(), &mut stopping)? {
            break;
        }
        state.extend();
    }
    if let Some(s) = streamer.as_mut() {
        s.end()?;
    }
    Ok(GenerateOutput {
        sequences: state.sequences,
        scores: outputs.scores,
        logits: outputs.logits,
        hidden_states: None,
        attentions: None,
        finish_reasons: state.finish,
        prompt_len: t,
        sequences_scores: None,
        beam_indices: None,
        assisted: None,
    })
}

/// The last hidden state of a forward run with hidden states, f32 `[rows, t, hidden]`.
fn last_hidden(out: &crate::models::ModelOutput) -> Result<Tensor> {
    let h = out
        .last_hidden_state()
        .ok_or_else(|| Error::input("contrastive search needs the model's hidden states"))?;
    Ok(h.to_dtype(DType::F32)?)
}

/// `x / x.norm(dim=-1, keepdim=True)`, `[rows, t, hidden]`.
fn normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?; // [rows, t, 1]
    Ok(x.broadcast_div(&norm)?)
}

/// Each row repeated `n` times in place (`repeat_interleave(n, dim=0)`).
fn repeat_rows<T: Clone>(rows: &[Vec<T>], n: usize) -> Vec<Vec<T>> {
    rows.iter()
        .flat_map(|r| std::iter::repeat_n(r.clone(), n))
        .collect()
}

/// `torch.topk(softmax(scores), k)` per row: `(token, probability)` pairs, most likely first
/// (ties: the lower id first).
fn top_k_probs(scores: &Scores, k: usize) -> Vec<Vec<(TokenId, f32)>> {
    (0..scores.batch)
        .map(|i| {
            let row = scores.row(i);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]).then(a.cmp(&b)));
            order
                .into_iter()
                .take(k)
                .map(|j| (j as TokenId, exp[j] / sum))
                .collect()
        })
        .collect()
}

/// `_ranking_fast`'s choice for one row: the candidate with the largest
/// `(1 - alpha) * p - alpha * penalty` (the first on ties).
fn best_candidate(candidates: &[(TokenId, f32)], penalties: &[f32], alpha: f64) -> usize {
    let (keep, penalise) = ((1.0 - alpha) as f32, alpha as f32);
    let mut best = (0, f32::NEG_INFINITY);
    for (j, (&(_, p), &pen)) in candidates.iter().zip(penalties).enumerate() {
        let score = keep * p - penalise * pen;
        if score > best.1 || j == 0 {
            best = (j, score);
        }
    }
    best.0
}

/// The context of the degeneration penalty: the normalised last hidden states of every token so
/// far and which of them are padding.
struct Context {
    /// `[b, s, hidden]` f32, each row of unit norm.
    hidden: Tensor,
    /// `[b][s]`: 1 for tokens the penalty looks at (`cosine_matrix_mask`).
    mask: Vec<Vec<u8>>,
}

impl Context {
    /// The prompt's last hidden states `[b, t, hidden]` and its padding mask.
    fn new(prompt_hidden: Tensor, mask: Option<&[Vec<u8>]>) -> Result<Self> {
        let (b, t, _) = prompt_hidden.dims3()?;
        Ok(Self {
            hidden: normalize(&prompt_hidden)?,
            mask: mask.map_or_else(|| vec![vec![1; t]; b], <[Vec<u8>]>::to_vec),
        })
    }

    /// For normalised candidate states `[b * k, 1, hidden]`: per row and candidate, the largest
    /// cosine similarity with a non-padding context token, `[b][k]`.
    fn degeneration_penalty(&self, next: &Tensor, k: usize) -> Result<Vec<Vec<f32>>> {
        let (b, s, h) = self.hidden.dims3()?;
        let next = next.reshape((b, k, h))?; // [b, k, h]
        let context_t = self.hidden.transpose(1, 2)?.contiguous()?; // [b, h, s]
        let cosine: Vec<Vec<Vec<f32>>> = next.matmul(&context_t)?.to_vec3()?; // [b, k, s]
        Ok(cosine
            .iter()
            .zip(&self.mask)
            .map(|(row, mask)| {
                row.iter()
                    .map(|cands| {
                        cands
                            .iter()
                            .zip(mask)
                            .take(s)
                            .filter(|(_, &m)| m != 0)
                            .map(|(&c, _)| c)
                            .fold(f32::NEG_INFINITY, f32::max)
                    })
                    .collect()
            })
            .collect())
    }

    /// Appends the chosen candidates' states (`rows` of `next`, `[b * k, 1, hidden]`).
    fn push(&mut self, next: &Tensor, rows: &[usize]) -> Result<()> {
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::new(idx, next.device())?;
        let chosen = next.index_select(&idx, 0)?; // [b, 1, h]
        self.hidden = Tensor::cat(&[&self.hidden, &chosen], 1)?; // [b, s + 1, h]
        self.mask.iter_mut().for_each(|m| m.push(1));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_sorted_by_probability() {
        let scores = Scores::new(vec![0.0, 2.0, f32::NEG_INFINITY, 2.0, 1.0], 1, 5);
        let top = top_k_probs(&scores, 3);
        let ids: Vec<TokenId> = top[0].iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, vec![1, 3, 4]);
        let total: f32 = [0.0f32, 2.0, 2.0, 1.0].iter().map(|x| x.exp()).sum();
        assert!((top[0][0].1 - 2f32.exp() / total).abs() < 1e-6);
    }

    #[test]
    fn the_penalty_trades_confidence_for_novelty() {
        let cands = [(7, 0.6f32), (8, 0.3)];
        // Without penalty the most likely wins; a strong penalty on it flips the choice.
        assert_eq!(best_candidate(&cands, &[0.0, 0.0], 0.6), 0);
        assert_eq!(best_candidate(&cands, &[0.9, 0.1], 0.6), 1);
        assert_eq!(best_candidate(&cands, &[0.9, 0.1], 0.0), 0);
    }

    #[test]
    fn penalty_ignores_padding_positions() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        // Context: [pad pointing along x, real token along y].
        let ctx = Tensor::new(&[[[1f32, 0.], [0., 2.]]], &dev)?; // [1, 2, 2]
        let context = Context::new(ctx, Some(&[vec![0, 1]]))?;
        let next = normalize(&Tensor::new(&[[[3f32, 0.]], [[1., 1.]]], &dev)?)?; // [2, 1, 2]
        let pen = context.degeneration_penalty(&next, 2)?;
        assert!(pen[0][0].abs() < 1e-6, "{pen:?}");
        assert!((pen[0][1] - 0.5f32.sqrt()).abs() < 1e-6, "{pen:?}");
        Ok(())
    }
}
