//! Diverse (group) beam search: HF `GenerationMixin._group_beam_search` with `BeamSearchScorer`
//! (transformers 4.47; transformers 5 moved it to the Hub repo `transformers-community/group-beam-search`).
//!
//! The `num_beams` beams of each batch item form `num_beam_groups` groups of `group_size`. Each step
//! runs the model once over all beams, then the groups in order: `log_softmax` -> Hamming diversity
//! penalty (the tokens earlier groups picked at this step) -> the logits processors on the group's
//! rows -> `+ beam score` -> top `max(2, 1 + n_eos) * group_size` over `group_size * vocab` -> the
//! scorer keeps `group_size` non-EOS continuations and files EOS ones (ranked within the first
//! `group_size`) as finished hypotheses of that group. Finished hypotheses of all groups compete at
//! the end.
//!
//! Deliberate differences: the Hamming penalty runs before the whole processor list (transformers
//! runs it after `sequence_bias`; both only add to scores, so the result is the same up to float
//! rounding); `beam_indices` hold the global row of each step's source beam (transformers' group
//! indices are per group and not usable by `compute_transition_scores`).

use super::beam::candidates;
use super::beam::{log_softmax, topk};
use super::beam_hypotheses::{
    all_stopped, assemble, best, done_filler, BeamHypotheses, StepOutputs,
};
use super::rows::BeamRows;
use crate::error::{Error, Result};
use crate::generation::context::GenerationContext;
use crate::generation::logits::HammingDiversityLogitsProcessor;
use crate::generation::resolve::GroupBeams;
use crate::generation::{GenerateInput, GenerateOutput, ResolvedGeneration, Scores};
use crate::models::CausalLM;
use crate::TokenId;

/// transformers' "very unlikely" score for the beams that start masked.
const MASK: f32 = -1.0e9;

/// Group beam search over `input`.
pub(crate) fn run(
    model: &dyn CausalLM,
    input: &GenerateInput,
    g: &ResolvedGeneration,
    ctx: GenerationContext<'_, '_>,
    settings: &GroupBeams,
) -> Result<GenerateOutput> {
    let GroupBeams {
        beams,
        num_beam_groups: groups,
        diversity_penalty,
    } = *settings;
    let (batch, t, nb) = (g.batch, g.prompt_len, beams.num_beams);
    let gs = nb / groups;
    let hamming = HammingDiversityLogitsProcessor::new(diversity_penalty as f32, nb, groups)?;
    let max_length = g.lengths.max_length;
    let rows = g.rows();
    let eos = &g.eos_token_id;
    let pad = g.pad_token_id;
    let k = candidates(&g.eos_token_id, gs);
    let (processors, mut stopping) = (ctx.processors, ctx.stopping);

    let mut model_rows = BeamRows::new(model, input, g.new_cache(), g.prefill_chunk_size)?;
    let mut seqs = input.input_ids.clone(); // [rows][cur_len]
    let mut indices: Vec<Vec<i64>> = vec![Vec::new(); rows];
    // `beam_scores[:, ::group_size] = 0`, the rest -1e9.
    let mut beam_scores: Vec<f32> = (0..rows)
        .map(|r| if r % gs == 0 { 0.0 } else { MASK })
        .collect();
    // `_beam_hyps[i * groups + g]`, `_done` alike.
    let mut hyps: Vec<BeamHypotheses> = (0..batch * groups)
        .map(|_| BeamHypotheses::new(gs, beams.length_penalty, beams.early_stopping, max_length))
        .collect();
    let mut done = vec![false; batch * groups];
    let mut all_scores = ctx.outputs.scores;
    let mut all_logits = ctx.outputs.logits;
    loop {
        let logits = model_rows.logits(&seqs)?;
        let vocab = logits.vocab;
        let cur_len = seqs[0].len() + 1; // the length the new scores are computed on
        let mut current_tokens: Vec<TokenId> = vec![0; rows];
        let mut reordering = vec![0usize; rows];
        let mut next_seqs = seqs.clone();
        let mut next_indices = indices.clone();
        let mut processed = all_scores
            .is_some()
            .then(|| Scores::new(vec![0.0; rows * vocab], rows, vocab));
        for g in 0..groups {
            // Rows of group `g` across the batch: `[batch * gs]`.
            let group_rows: Vec<usize> = (0..batch)
                .flat_map(|i| (0..gs).map(move |j| i * nb + g * gs + j))
                .collect();
            let group_seqs: Vec<Vec<TokenId>> =
                group_rows.iter().map(|&r| seqs[r].clone()).collect();
            let mut scores = Scores::new(
                group_rows
                    .iter()
                    .flat_map(|&r| logits.row(r).iter().copied())
                    .collect(),
                group_rows.len(),
                vocab,
            );
            scores.rows_mut().for_each(log_softmax);
            hamming.process_group(&current_tokens, g, &mut scores)?;
            processors.process(&group_seqs, &mut scores)?;
            if let Some(p) = processed.as_mut() {
                for (n, &r) in group_rows.iter().enumerate() {
                    p.row_mut(r).copy_from_slice(scores.row(n));
                }
            }
            for i in 0..batch {
                let bg = i * groups + g;
                // `[gs * vocab]` accumulated scores of this batch item's group.
                let mut acc = Vec::with_capacity(gs * vocab);
                for j in 0..gs {
                    let s = beam_scores[i * nb + g * gs + j];
                    acc.extend(scores.row(i * gs + j).iter().map(|&x| x + s));
                }
                let picks = topk(&acc, k);
                // (score, token, group-local source row `i * gs + j`)
                let mut next: Vec<(f32, TokenId, usize)> = Vec::with_capacity(gs);
                if done[bg] {
                    // transformers pads a finished group with source index 0 of the whole batch.
                    next.resize(gs, (0.0, done_filler(eos, pad)?, 0));
                } else {
                    for (rank, &p) in picks.iter().enumerate() {
                        let local = i * gs + p / vocab;
                        let tok = (p % vocab) as TokenId;
                        if eos.contains(&tok) {
                            if rank >= gs {
                                continue;
                            }
                            let src = group_rows[local];
                            let mut idx = indices[src].clone();
                            idx.push(src as i64);
                            hyps[bg].add(
                                group_seqs[local].clone(),
                                acc[p],
                                idx,
                                cur_len - t,
                                Some(crate::generation::FinishReason::Eos),
                            );
                        } else {
                            next.push((acc[p], tok, local));
                        }
                        if next.len() == gs {
                            break;
                        }
                    }
                    if next.len() < gs {
                        return Err(Error::input(format!(
                            "at most {gs} of the top {k} candidates can be an EOS token"
                        )));
                    }
                    let top = picks.first().map_or(f32::NEG_INFINITY, |&p| acc[p]);
                    done[bg] = hyps[bg].is_done(top, cur_len, t)?;
                }
                for (j, &(score, tok, local)) in next.iter().enumerate() {
                    let row = i * nb + g * gs + j;
                    let src = group_rows[local];
                    beam_scores[row] = score;
                    current_tokens[row] = tok;
                    // `num_beams * (beam_idx // group_size) + group_start + beam_idx % group_size`
                    reordering[row] = nb * (local / gs) + g * gs + local % gs;
                    let mut s = group_seqs[local].clone();
                    s.push(tok);
                    next_seqs[row] = s;
                    let mut idx = indices[src].clone();
                    idx.push(src as i64);
                    next_indices[row] = idx;
                }
            }
        }
        if let Some(l) = all_logits.as_mut() {
            l.push(logits);
        }
        if let (Some(s), Some(p)) = (all_scores.as_mut(), processed) {
            s.push(p);
        }
        seqs = next_seqs;
        indices = next_indices;
        if done.iter().all(|&d| d) || all_stopped(&mut stopping, &seqs) {
            break;
        }
        model_rows.advance(&reordering, &current_tokens)?;
    }
    tracing::debug!(
        steps = seqs[0].len() - t,
        cached = model_rows.cached(),
        "group beam search done"
    );
    // `finalize`: the running beams of unfinished groups join their group's hypotheses.
    let mut returned = Vec::with_capacity(batch * g.num_return_sequences);
    for i in 0..batch {
        let mut candidates = Vec::new();
        for g in 0..groups {
            let bg = i * groups + g;
            if !done[bg] {
                for j in 0..gs {
                    let row = i * nb + g * gs + j;
                    let reason = stopping.check(&seqs[row]);
                    hyps[bg].add(
                        seqs[row].clone(),
                        beam_scores[row],
                        indices[row].clone(),
                        seqs[row].len() - t,
                        reason,
                    );
                }
            }
            candidates.extend(std::mem::take(&mut hyps[bg].beams));
        }
        returned.extend(best(candidates, g.num_return_sequences));
    }
    let steps = StepOutputs {
        scores: all_scores,
        logits: all_logits,
    };
    assemble(&returned, t, max_length, eos, pad, steps)
}
