//! HF `GenerationMixin._beam_search` (utils.py, the vectorised rewrite of transformers 4.50+/5):
//! beam search and beam sampling (`do_sample=true`).
//!
//! Per step, for every running beam (`[b * num_beams]` rows):
//! `log_softmax(logits)` -> logits processors -> `+ running beam score` -> over `num_beams * vocab`
//! per batch item, `K = max(2, 1 + n_eos) * num_beams` candidates (`topk`, or
//! `multinomial(softmax(accumulated), K)` without replacement when sampling) -> each candidate is
//! checked against the stopping criteria -> the best `num_beams` candidates that did not stop keep
//! running (`_get_running_beams_for_next_iteration`) -> candidates among the first `num_beams` of the
//! top-K that stopped join the finished set with score `sum_logprobs / generated_len ** length_penalty`
//! (`_update_finished_beams`) -> the KV cache is reordered by beam -> `early_stopping` decides whether
//! more can be gained (`_check_early_stop_heuristic`, `_beam_search_has_unfinished_sequences`).
//!
//! Scores follow transformers' float32 arithmetic, including the `-1e9` masks, so that ties and
//! orderings come out the same. Ties in `topk` go to the lower index.
//!
//! Deliberate differences: the finished-sequence filler is `pad_token_id or eos[0]` when EOS ids
//! are set, as in transformers; without EOS transformers uses `-1`, which a [`TokenId`] cannot hold,
//! so lmgen uses `pad_token_id` (else 0) there. Only rows that stopped before `max_length` on a stop
//! string or a caller criterion, without EOS ids, can show it. Sampled candidates come from lmgen's
//! seeded RNG, not torch's.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::rows::BeamRows;
use crate::error::{Error, Result};
use crate::generation::config::EarlyStopping;
use crate::generation::context::GenerationContext;
use crate::generation::resolve::Beams;
use crate::generation::sampler::softmax;
use crate::generation::stopping::FinishReason;
use crate::generation::{GenerateInput, GenerateOutput, ResolvedGeneration};
use crate::models::CausalLM;
use crate::TokenId;

/// transformers' "very unlikely" score (`-1.0e9`), added to mask beams.
const MASK: f32 = -1.0e9;

/// One hypothesis: a running beam, a top-K candidate, or a finished-set slot.
#[derive(Debug, Clone)]
struct Hyp {
    /// `[prompt + generated]`
    tokens: Vec<TokenId>,
    /// Running: accumulated log-probs; finished slot: length-penalised score.
    score: f32,
    /// `[generated]` flat row (`batch * num_beams + beam`) each token was chosen from.
    indices: Vec<i64>,
    /// Why it stopped (finished slots; `None` while unfilled).
    reason: Option<FinishReason>,
}

/// Indices of the `k` largest `values`, best first; ties to the lower index (`torch.topk`).
pub(super) fn topk(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// `torch.multinomial(softmax(values), k)` without replacement.
fn multinomial(values: &[f32], k: usize, rng: &mut StdRng) -> Result<Vec<usize>> {
    if values.iter().any(|x| x.is_nan() || *x == f32::INFINITY) {
        return Err(Error::input(
            "the beam scores contain NaN or +inf, so there is no distribution to sample from; set `remove_invalid_values: true`",
        ));
    }
    let mut probs = softmax(values).ok_or_else(|| {
        Error::input(
            "every beam continuation was filtered out (all scores are -inf); relax the logits processors",
        )
    })?;
    let mut out = Vec::with_capacity(k);
    for _ in 0..k {
        let total: f64 = probs.iter().sum();
        if total <= 0.0 {
            return Err(Error::input(format!(
                "beam sampling needs {k} candidates with non-zero probability, fewer are left after the logits processors; lower `num_beams` or relax `top_k`/`top_p`"
            )));
        }
        let u = rng.random::<f64>() * total;
        let mut acc = 0.0;
        let mut pick = None;
        for (i, &p) in probs.iter().enumerate() {
            if p <= 0.0 {
                continue;
            }
            acc += p;
            pick = Some(i);
            if u < acc {
                break;
            }
        }
        let i = pick.unwrap_or(0);
        probs[i] = 0.0;
        out.push(i);
    }
    Ok(out)
}

/// Candidates per step for `beams` beams: `max(2, 1 + n_eos) * beams`, so at least `beams` of
/// them are not EOS.
pub(super) fn candidates(eos: &[TokenId], beams: usize) -> usize {
    2usize.max(1 + eos.len()) * beams
}

/// `row - logsumexp(row)` in float32, as `torch.log_softmax`.
pub(super) fn log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return;
    }
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    let ln = sum.ln();
    row.iter_mut().for_each(|x| *x = (*x - max) - ln);
}

/// Beam search, or beam sampling when `do_sample`, over `input` (expanded to `num_beams` rows per
/// prompt).
pub(crate) fn run(
    model: &dyn CausalLM,
    input: &GenerateInput,
    g: &ResolvedGeneration,
    ctx: GenerationContext<'_, '_>,
    beams: &Beams,
) -> Result<GenerateOutput> {
    let seed = ctx.seed;
    let (batch, t, nb, nrs) = (
        g.batch,
        g.prompt_len,
        beams.num_beams,
        g.num_return_sequences,
    );
    let do_sample = beams.do_sample;
    let (early, lp) = (beams.early_stopping, beams.length_penalty);
    let max_length = g.lengths.max_length;
    let rows = g.rows();
    let eos = &g.eos_token_id;
    // `output_fill_value = pad_token_id or eos_token_id[0] if eos_token_id is not None else -1`
    let fill = match eos.first() {
        Some(&e) => g.pad_token_id.filter(|&p| p != 0).unwrap_or(e),
        None => g.pad_token_id.unwrap_or(0),
    };
    let k = candidates(&g.eos_token_id, nb); // `beams_to_keep`
    let (processors, mut stopping) = (ctx.processors, ctx.stopping);
    let mut rng = do_sample.then(|| {
        let seed = seed.unwrap_or_else(|| StdRng::from_os_rng().random());
        tracing::debug!(seed, "beam sampler");
        StdRng::seed_from_u64(seed)
    });

    let mut model_rows = BeamRows::new(model, input, g.new_cache(), g.prefill_chunk_size)?;
    // Running beams, `[b * nb]`; initial scores `[0, -1e9, ...]` so step 1 expands beam 0 only.
    let mut running: Vec<Hyp> = input
        .input_ids
        .iter()
        .enumerate()
        .map(|(r, ids)| Hyp {
            tokens: ids.clone(),
            score: if r % nb == 0 { 0.0 } else { MASK },
            indices: Vec::new(),
            reason: None,
        })
        .collect();
    // Finished set, `[b][nb]`, best first; unfilled slots score -1e9.
    let mut finished: Vec<Vec<Hyp>> = (0..batch)
        .map(|i| {
            (0..nb)
                .map(|j| Hyp {
                    score: MASK,
                    ..running[i * nb + j].clone()
                })
                .collect()
        })
        .collect();
    let mut is_finished = vec![vec![false; nb]; batch];
    let mut unsatisfied = vec![true; batch]; // `is_early_stop_heuristic_unsatisfied`
    let mut all_scores = ctx.outputs.scores;
    let mut all_logits = ctx.outputs.logits;
    let mut cur_len = t;
    loop {
        let seqs: Vec<Vec<TokenId>> = running.iter().map(|h| h.tokens.clone()).collect();
        let mut scores = model_rows.logits(&seqs)?;
        let vocab = scores.vocab;
        if let Some(l) = all_logits.as_mut() {
            l.push(scores.clone());
        }
        scores.rows_mut().for_each(log_softmax);
        processors.process(&seqs, &mut scores)?;

        let div = ((cur_len + 1 - t) as f64).powf(lp) as f32;
        let mut next_running = Vec::with_capacity(rows);
        let mut beam_idx = Vec::with_capacity(rows); // source row of each new running beam
        let mut all_hit = true;
        for i in 0..batch {
            // `_get_top_k_continuations`: [nb, vocab] + running scores -> [nb * vocab] -> K picks
            let mut acc = Vec::with_capacity(nb * vocab);
            for j in 0..nb {
                let s = running[i * nb + j].score;
                acc.extend(scores.row(i * nb + j).iter().map(|&x| x + s));
            }
            let picks = match rng.as_mut() {
                Some(rng) => multinomial(&acc, k, rng)?,
                None => topk(&acc, k),
            };
            let mut cands = Vec::with_capacity(k);
            let mut hits = Vec::with_capacity(k);
            for &p in &picks {
                let src = i * nb + p / vocab;
                let mut h = running[src].clone();
                h.tokens.push((p % vocab) as TokenId);
                h.indices.push(src as i64);
                h.score = acc[p];
                let hit = stopping.check(&h.tokens);
                all_hit &= hit.is_some();
                h.reason = hit;
                hits.push(hit.is_some());
                cands.push((src, h));
            }
            // `_get_running_beams_for_next_iteration`: finished candidates cannot continue.
            let run_scores: Vec<f32> = cands
                .iter()
                .zip(&hits)
                .map(|((_, h), &hit)| h.score + if hit { MASK } else { 0.0 })
                .collect();
            for c in topk(&run_scores, nb) {
                let (src, h) = &cands[c];
                beam_idx.push(*src);
                next_running.push(Hyp {
                    score: run_scores[c],
                    reason: None,
                    ..h.clone()
                });
            }
            // `_update_finished_beams`: only the first nb of the top-K may finish.
            let full = is_finished[i].iter().all(|&f| f) && early == EarlyStopping::True;
            let mut merged: Vec<(Hyp, bool)> = finished[i]
                .iter()
                .cloned()
                .zip(is_finished[i].iter().copied())
                .collect();
            for (n, ((_, h), &hit)) in cands.iter().zip(&hits).enumerate() {
                let did = hit && n < nb;
                let mut s = h.score / div;
                if full {
                    s += MASK;
                }
                if !unsatisfied[i] {
                    s += MASK;
                }
                if !did {
                    s += MASK;
                }
                merged.push((
                    Hyp {
                        score: s,
                        ..h.clone()
                    },
                    did,
                ));
            }
            let merged_scores: Vec<f32> = merged.iter().map(|(h, _)| h.score).collect();
            let best = topk(&merged_scores, nb);
            finished[i] = best.iter().map(|&m| merged[m].0.clone()).collect();
            is_finished[i] = best.iter().map(|&m| merged[m].1).collect();
        }
        if let Some(s) = all_scores.as_mut() {
            s.push(scores);
        }
        running = next_running;
        cur_len += 1;
        // `_check_early_stop_heuristic`
        let best_len = if early == EarlyStopping::Never && lp > 0.0 {
            max_length - t
        } else {
            cur_len - t
        };
        let best_div = (best_len as f64).powf(lp) as f32;
        for i in 0..batch {
            let best_possible = running[i * nb].score / best_div;
            let min = finished[i]
                .iter()
                .map(|h| h.score)
                .fold(f32::INFINITY, f32::min);
            let improvable = is_finished[i]
                .iter()
                .any(|&f| best_possible > if f { min } else { MASK });
            unsatisfied[i] &= improvable;
        }
        // `_beam_search_has_unfinished_sequences`
        let all_full = is_finished.iter().flatten().all(|&f| f) && early == EarlyStopping::True;
        if !unsatisfied.iter().any(|&u| u) || all_full || all_hit {
            break;
        }
        // Reorder the cache by the source beam of each new running beam.
        let last: Vec<TokenId> = running
            .iter()
            .map(|h| h.tokens.last().copied().unwrap_or(0))
            .collect();
        model_rows.advance(&beam_idx, &last)?;
    }
    tracing::debug!(
        steps = cur_len - t,
        cached = model_rows.cached(),
        "beam search done"
    );
    // Output: the best `num_return_sequences` of each batch item, cropped to the longest.
    let returned: Vec<&Hyp> = finished.iter().flat_map(|f| f.iter().take(nrs)).collect();
    let gen_len = returned.iter().map(|h| h.indices.len()).max().unwrap_or(0);
    let sequences = returned
        .iter()
        .map(|h| {
            let mut row = h.tokens.clone();
            row.resize(t + gen_len, fill);
            row
        })
        .collect();
    let beam_indices = returned
        .iter()
        .map(|h| {
            let mut row = h.indices.clone();
            row.resize(gen_len, -1);
            row
        })
        .collect();
    Ok(GenerateOutput {
        sequences,
        scores: all_scores,
        logits: all_logits,
        hidden_states: None,
        attentions: None,
        finish_reasons: returned.iter().map(|h| h.reason).collect(),
        prompt_len: t,
        sequences_scores: Some(returned.iter().map(|h| h.score).collect()),
        beam_indices: Some(beam_indices),
        assisted: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_is_sorted_with_ties_to_the_lower_index() {
        assert_eq!(topk(&[1.0, 3.0, 3.0, 2.0], 3), vec![1, 2, 3]);
    }

    #[test]
    fn multinomial_draws_distinct_nonzero_indices() {
        let mut rng = StdRng::seed_from_u64(1);
        let v = [0.0, f32::NEG_INFINITY, 1.0, 2.0, MASK];
        let mut got = multinomial(&v, 3, &mut rng).unwrap();
        got.sort();
        assert_eq!(got, vec![0, 2, 3]);
        assert!(multinomial(&v, 4, &mut rng).is_err());
    }

    #[test]
    fn log_softmax_normalises() {
        let mut r = [1.0f32, 2.0, 3.0];
        log_softmax(&mut r);
        let total: f32 = r.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
