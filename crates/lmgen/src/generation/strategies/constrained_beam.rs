//! Constrained beam search: HF `GenerationMixin._constrained_beam_search` with
//! `ConstrainedBeamSearchScorer` (transformers 4.47; transformers 5 moved it to the Hub repo
//! `transformers-community/constrained-beam-search`).
//!
//! Each step is a beam-search step (`log_softmax` -> processors -> `+ beam score` -> top
//! `max(2, 1 + n_eos) * num_beams`), then `step_sentence_constraint`: for every running beam, the
//! tokens that advance its constraints are proposed as extra candidates, and all candidates are
//! sorted into "banks" by constraint progress (`ConstraintListState::bank`) and taken round-robin
//! from the highest bank down, so beams that fulfil more of the constraints survive. An EOS
//! candidate finishes a hypothesis only if its sequence fulfils every constraint. Progress counts
//! every token of the sequence, the prompt included, as in transformers.
//!
//! Deliberate difference: `beam_indices` are returned for every hypothesis (transformers drops them
//! for beams added at the end without fulfilling the constraints).

use super::beam::candidates;
use super::beam::{log_softmax, topk};
use super::beam_hypotheses::{
    all_stopped, assemble, best, done_filler, BeamHypotheses, StepOutputs,
};
use super::rows::BeamRows;
use crate::error::{Error, Result};
use crate::generation::constraints::ConstraintListState;
use crate::generation::context::GenerationContext;
use crate::generation::resolve::ConstrainedBeams;
use crate::generation::{FinishReason, GenerateInput, GenerateOutput, ResolvedGeneration};
use crate::models::CausalLM;
use crate::TokenId;

/// transformers' "very unlikely" score for the beams that start masked.
const MASK: f32 = -1.0e9;

/// One candidate continuation of a step: `(score, token, source row)`.
type Candidate = (f32, TokenId, usize);

/// Constrained beam search over `input`.
pub(crate) fn run(
    model: &dyn CausalLM,
    input: &GenerateInput,
    g: &ResolvedGeneration,
    ctx: GenerationContext<'_, '_>,
    settings: &ConstrainedBeams,
) -> Result<GenerateOutput> {
    let ConstrainedBeams { beams, constraints } = settings;
    let (batch, t, nb) = (g.batch, g.prompt_len, beams.num_beams);
    let fresh = ConstraintListState::new(constraints)?;
    let completes = |tokens: &[TokenId]| {
        let mut state = fresh.clone();
        state.reset(tokens);
        state.completed()
    };
    let max_length = g.lengths.max_length;
    let rows = g.rows();
    let eos = &g.eos_token_id;
    let pad = g.pad_token_id;
    let k = candidates(&g.eos_token_id, nb);
    let (processors, mut stopping) = (ctx.processors, ctx.stopping);

    let mut model_rows = BeamRows::new(model, input, g.new_cache(), g.prefill_chunk_size)?;
    let mut seqs = input.input_ids.clone(); // [rows][cur_len]
    let mut indices: Vec<Vec<i64>> = vec![Vec::new(); rows];
    let mut beam_scores: Vec<f32> = (0..rows)
        .map(|r| if r % nb == 0 { 0.0 } else { MASK })
        .collect();
    let mut hyps: Vec<BeamHypotheses> = (0..batch)
        .map(|_| BeamHypotheses::new(nb, beams.length_penalty, beams.early_stopping, max_length))
        .collect();
    let mut done = vec![false; batch];
    let mut all_scores = ctx.outputs.scores;
    let mut all_logits = ctx.outputs.logits;
    loop {
        let logits = model_rows.logits(&seqs)?;
        let vocab = logits.vocab;
        let cur_len = seqs[0].len() + 1;
        let mut scores = logits.clone();
        scores.rows_mut().for_each(log_softmax);
        processors.process(&seqs, &mut scores)?;
        // `scores_for_all_vocab`: processed scores plus each beam's running score, `[rows, vocab]`.
        let mut all_vocab = scores.clone();
        for (r, row) in all_vocab.rows_mut().enumerate() {
            let s = beam_scores[r];
            row.iter_mut().for_each(|x| *x += s);
        }
        let mut next: Vec<Candidate> = Vec::with_capacity(rows);
        for i in 0..batch {
            if done[i] {
                // transformers pads a finished item with source row 0 of the whole batch.
                next.extend(std::iter::repeat_n((0.0, done_filler(eos, pad)?, 0), nb));
                continue;
            }
            let acc = &all_vocab.data[i * nb * vocab..(i + 1) * nb * vocab];
            let picks = topk(acc, k);
            let mut chosen: Vec<Candidate> = Vec::with_capacity(nb);
            for (rank, &p) in picks.iter().enumerate() {
                let src = i * nb + p / vocab;
                let tok = (p % vocab) as TokenId;
                if eos.contains(&tok) {
                    if rank >= nb {
                        continue;
                    }
                    if completes(&seqs[src]) {
                        let mut idx = indices[src].clone();
                        idx.push(src as i64);
                        hyps[i].add(
                            seqs[src].clone(),
                            acc[p],
                            idx,
                            cur_len - t,
                            Some(FinishReason::Eos),
                        );
                    }
                } else {
                    chosen.push((acc[p], tok, src));
                }
                if chosen.len() == nb {
                    break;
                }
            }
            if chosen.len() < nb {
                return Err(Error::input(format!(
                    "at most {nb} of the top {k} candidates can be an EOS token"
                )));
            }
            let chosen = step_sentence_constraint(i, nb, &seqs, &all_vocab, chosen, &fresh);
            let top = picks.first().map_or(f32::NEG_INFINITY, |&p| acc[p]);
            done[i] = hyps[i].is_done(top, cur_len, t)?;
            next.extend(chosen);
        }
        if let Some(l) = all_logits.as_mut() {
            l.push(logits);
        }
        if let Some(s) = all_scores.as_mut() {
            s.push(scores);
        }
        let mut next_seqs = Vec::with_capacity(rows);
        let mut next_indices = Vec::with_capacity(rows);
        for &(_, tok, src) in &next {
            let mut s = seqs[src].clone();
            s.push(tok);
            next_seqs.push(s);
            let mut idx = indices[src].clone();
            idx.push(src as i64);
            next_indices.push(idx);
        }
        beam_scores = next.iter().map(|&(s, _, _)| s).collect();
        seqs = next_seqs;
        indices = next_indices;
        if done.iter().all(|&d| d) || all_stopped(&mut stopping, &seqs) {
            break;
        }
        let source: Vec<usize> = next.iter().map(|&(_, _, src)| src).collect();
        let tokens: Vec<TokenId> = next.iter().map(|&(_, tok, _)| tok).collect();
        model_rows.advance(&source, &tokens)?;
    }
    tracing::debug!(
        steps = seqs[0].len() - t,
        cached = model_rows.cached(),
        "constrained beam search done"
    );
    // `finalize`: running beams that fulfil the constraints join the hypotheses; if fewer than
    // `num_return_sequences` do, every other running beam joins too.
    let nrs = g.num_return_sequences;
    let mut returned = Vec::with_capacity(batch * nrs);
    for i in 0..batch {
        if !done[i] {
            let mut collected = 0;
            let mut rest = Vec::new();
            for j in 0..nb {
                let row = i * nb + j;
                if completes(&seqs[row]) {
                    let reason = stopping.check(&seqs[row]);
                    let (s, idx) = (seqs[row].clone(), indices[row].clone());
                    hyps[i].add(s, beam_scores[row], idx, seqs[row].len() - t, reason);
                    collected += 1;
                } else {
                    rest.push(row);
                }
            }
            if collected < nrs {
                for row in rest {
                    let reason = stopping.check(&seqs[row]);
                    let (s, idx) = (seqs[row].clone(), indices[row].clone());
                    hyps[i].add(s, beam_scores[row], idx, seqs[row].len() - t, reason);
                }
            }
        }
        returned.extend(best(std::mem::take(&mut hyps[i].beams), nrs));
    }
    let steps = StepOutputs {
        scores: all_scores,
        logits: all_logits,
    };
    assemble(&returned, t, max_length, eos, pad, steps)
}

/// HF `ConstrainedBeamSearchScorer.step_sentence_constraint` for batch item `i`: adds the
/// constraint-advancing continuations of every running beam to `chosen` (the `num_beams` best
/// non-EOS candidates) and picks `num_beams` of them bank by bank.
fn step_sentence_constraint(
    i: usize,
    nb: usize,
    seqs: &[Vec<TokenId>],
    all_vocab: &crate::generation::Scores,
    chosen: Vec<Candidate>,
    fresh: &ConstraintListState,
) -> Vec<Candidate> {
    // Candidate sequences so far (duplicates are not proposed twice).
    let mut new_seqs: Vec<Vec<TokenId>> = chosen
        .iter()
        .map(|&(_, tok, src)| {
            let mut s = seqs[src].clone();
            s.push(tok);
            s
        })
        .collect();
    let mut banks: Vec<usize> = new_seqs
        .iter()
        .map(|s| {
            let mut st = fresh.clone();
            st.reset(s);
            st.bank()
        })
        .collect();
    let mut all = chosen;
    let proposed = all.len();
    for seq_idx in 0..nb {
        let src = i * nb + seq_idx;
        let pre = &seqs[src];
        let mut state = fresh.clone();
        state.reset(pre);
        if state.completed() {
            continue;
        }
        for tok in state.advance() {
            let new_state = state.advanced_copy(tok);
            let mut s = pre.clone();
            s.push(tok);
            if !new_seqs.contains(&s) {
                new_seqs.push(s);
                all.push((all_vocab.row(src)[tok as usize], tok, src));
                banks.push(new_state.bank());
            }
        }
    }
    if all.len() == proposed {
        return all;
    }
    // `zipped = banks * 100 + scores`, sorted descending (ties keep their order).
    let zipped: Vec<f32> = all
        .iter()
        .zip(&banks)
        .map(|(&(s, _, _), &b)| (b * 100) as f32 + s)
        .collect();
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|&a, &b| zipped[b].total_cmp(&zipped[a]));
    // Round-robin over banks: the n-th best of every bank before the (n+1)-th of any.
    let mut increments = Vec::with_capacity(order.len());
    let mut counter = 0usize;
    for (n, &o) in order.iter().enumerate() {
        counter = if n > 0 && banks[o] == banks[order[n - 1]] {
            counter + 1
        } else {
            0
        };
        increments.push(counter);
    }
    let mut rearranged: Vec<usize> = (0..order.len()).collect();
    rearranged.sort_by_key(|&n| increments[n]);
    rearranged
        .into_iter()
        .take(nb)
        .map(|n| all[order[n]])
        .collect()
}
