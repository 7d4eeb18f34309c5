//! HF `BeamHypotheses` and `BeamSearchScorer.finalize` as of transformers 4.47 (`beam_search.py`),
//! the scorer of group and constrained beam search (the references of those modes come from 4.47;
//! transformers 5 moved them to the Hub). Scores are Python floats (f64) here, as there.

use crate::error::{Error, Result};
use crate::generation::config::EarlyStopping;
use crate::generation::stopping::{FinishReason, StoppingCriteriaList};
use crate::generation::{GenerateOutput, Scores};
use crate::TokenId;

/// A finished hypothesis.
#[derive(Debug, Clone)]
pub(super) struct Hypothesis {
    /// Length-penalised score.
    pub score: f64,
    /// `[prompt + generated]`, without the EOS that finished it.
    pub tokens: Vec<TokenId>,
    /// `[generated]` flat row each token was chosen from.
    pub indices: Vec<i64>,
    pub reason: Option<FinishReason>,
}

/// The `num_beams` best finished hypotheses of one batch item (or one group of it).
#[derive(Debug)]
pub(super) struct BeamHypotheses {
    num_beams: usize,
    length_penalty: f64,
    early_stopping: EarlyStopping,
    max_length: usize,
    pub beams: Vec<Hypothesis>,
    worst_score: f64,
}

impl BeamHypotheses {
    pub(super) fn new(
        num_beams: usize,
        length_penalty: f64,
        early_stopping: EarlyStopping,
        max_length: usize,
    ) -> Self {
        Self {
            num_beams,
            length_penalty,
            early_stopping,
            max_length,
            beams: Vec::new(),
            worst_score: 1e9,
        }
    }

    /// HF `add`: keeps the hypothesis if there is room or it beats the worst kept one.
    pub(super) fn add(
        &mut self,
        tokens: Vec<TokenId>,
        sum_logprobs: f32,
        indices: Vec<i64>,
        generated_len: usize,
        reason: Option<FinishReason>,
    ) {
        let score = f64::from(sum_logprobs) / (generated_len as f64).powf(self.length_penalty);
        if self.beams.len() < self.num_beams || score > self.worst_score {
            self.beams.push(Hypothesis {
                score,
                tokens,
                indices,
                reason,
            });
            if self.beams.len() > self.num_beams {
                // `sorted([(s, idx) ...])`: lowest score first, ties to the lower index.
                let mut order: Vec<(f64, usize)> = self
                    .beams
                    .iter()
                    .enumerate()
                    .map(|(i, h)| (h.score, i))
                    .collect();
                order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                self.beams.remove(order[0].1);
                self.worst_score = order[1].0;
            } else {
                self.worst_score = self.worst_score.min(score);
            }
        }
    }

    /// HF `is_done`: whether no running beam can beat the kept hypotheses any more.
    pub(super) fn is_done(
        &self,
        best_sum_logprobs: f32,
        cur_len: usize,
        prompt_len: usize,
    ) -> Result<bool> {
        if self.beams.len() < self.num_beams {
            return Ok(false);
        }
        let best = f64::from(best_sum_logprobs);
        let len = match self.early_stopping {
            EarlyStopping::True => return Ok(true),
            EarlyStopping::Never if self.length_penalty > 0.0 => {
                if self.max_length <= prompt_len {
                    return Err(Error::config(
                        "`max_length` is not larger than the prompt length",
                    ));
                }
                self.max_length - prompt_len
            }
            _ => cur_len - prompt_len,
        };
        Ok(self.worst_score >= best / (len as f64).powf(self.length_penalty))
    }
}

/// The best `keep` of `candidates` (HF `finalize`: `sorted(..., key=score)` then `pop()`, so among
/// equal scores the later candidate wins).
pub(super) fn best(mut candidates: Vec<Hypothesis>, keep: usize) -> Vec<Hypothesis> {
    candidates.sort_by(|a, b| a.score.total_cmp(&b.score));
    candidates.into_iter().rev().take(keep).collect()
}

/// The token that fills the beams of a finished batch item (or group), which transformers can
/// only pad with EOS and pad ids defined.
pub(super) fn done_filler(eos: &[TokenId], pad: Option<TokenId>) -> Result<TokenId> {
    match (eos.is_empty(), pad) {
        (false, Some(p)) => Ok(p),
        _ => Err(Error::config(
            "a finished beam needs `eos_token_id` and `pad_token_id` to pad its rows",
        )),
    }
}

/// Whether every row meets a stopping criterion (the beam loops' `all(stopping_criteria(...))`).
pub(super) fn all_stopped(stopping: &mut StoppingCriteriaList<'_>, seqs: &[Vec<TokenId>]) -> bool {
    let mut all = true;
    for s in seqs {
        all &= stopping.check(s).is_some();
    }
    all
}

/// Step outputs kept for `output_scores` / `output_logits`.
pub(super) struct StepOutputs {
    pub scores: Option<Vec<Scores>>,
    pub logits: Option<Vec<Scores>>,
}

/// HF `finalize`'s output: the hypotheses cut to the longest one plus one (at most `max_length`),
/// the first EOS appended where it fits, then `pad`.
pub(super) fn assemble(
    best: &[Hypothesis],
    prompt_len: usize,
    max_length: usize,
    eos: &[TokenId],
    pad: Option<TokenId>,
    steps: StepOutputs,
) -> Result<GenerateOutput> {
    let longest = best.iter().map(|h| h.tokens.len()).max().unwrap_or(0);
    let shortest = best.iter().map(|h| h.tokens.len()).min().unwrap_or(0);
    let total = (longest + 1).min(max_length);
    let pad = match pad {
        Some(p) => p,
        None if shortest == longest => 0,
        None => {
            return Err(Error::config(
                "`pad_token_id` has to be defined to pad the returned beams to one length",
            ))
        }
    };
    let mut sequences = Vec::with_capacity(best.len());
    let mut indices = Vec::with_capacity(best.len());
    for h in best {
        let mut row = h.tokens.clone();
        if row.len() < total {
            row.push(eos.first().copied().unwrap_or(pad));
        }
        row.resize(total, pad);
        sequences.push(row);
        let mut idx = h.indices.clone();
        idx.resize(total.saturating_sub(prompt_len), -1);
        indices.push(idx);
    }
    Ok(GenerateOutput {
        sequences,
        scores: steps.scores,
        logits: steps.logits,
        hidden_states: None,
        attentions: None,
        finish_reasons: best.iter().map(|h| h.reason).collect(),
        prompt_len,
        sequences_scores: Some(best.iter().map(|h| h.score as f32).collect()),
        beam_indices: Some(indices),
        assisted: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_and_tracks_the_worst() {
        let mut h = BeamHypotheses::new(2, 1.0, EarlyStopping::False, 20);
        h.add(vec![1], -4.0, vec![], 2, None); // -2
        h.add(vec![2], -2.0, vec![], 2, None); // -1
        h.add(vec![3], -6.0, vec![], 2, None); // -3: not kept
        assert_eq!(h.beams.len(), 2);
        h.add(vec![4], -1.0, vec![], 2, None); // -0.5 evicts -2
        let kept: Vec<f64> = h.beams.iter().map(|b| b.score).collect();
        assert_eq!(kept, vec![-1.0, -0.5]);
        assert!(h.is_done(-3.0, 3, 0).unwrap()); // best possible -1 <= worst -1
        assert!(!h.is_done(-1.0, 3, 0).unwrap());
    }

    #[test]
    fn assemble_appends_eos_then_pads() {
        let hyp = |tokens: Vec<TokenId>, score| Hypothesis {
            score,
            tokens,
            indices: vec![0],
            reason: None,
        };
        let picked = best(vec![hyp(vec![9, 1], -1.0), hyp(vec![9, 1, 2], -0.5)], 2);
        let none = StepOutputs {
            scores: None,
            logits: None,
        };
        let out = assemble(&picked, 1, 10, &[7], Some(0), none).unwrap();
        assert_eq!(out.sequences, vec![vec![9, 1, 2, 7], vec![9, 1, 7, 0]]);
        assert_eq!(out.sequences_scores, Some(vec![-0.5, -1.0]));
        assert_eq!(out.beam_indices.unwrap()[1], vec![0, -1, -1]);
    }
}
