//! Candidate generators for assisted decoding (HF `src/transformers/generation/candidate_generator.py`),
//! one per file: a draft model (`draft_model`), n-gram lookup in the sequence itself
//! (`prompt_lookup`), the target's first layers (`early_exit`) and a draft with another tokenizer
//! (`universal`). The decoding loop that verifies their candidates is
//! [`crate::generation::strategies::assisted`].
//!
//! Assisted decoding runs one sequence (batch size 1, as transformers), so generators work on one row
//! of token ids.

pub(crate) mod confidence;
pub(crate) mod draft_model;
pub(crate) mod early_exit;
pub(crate) mod prompt_lookup;
pub(crate) mod universal;

use candle_core::Tensor;

use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::generation::logits::{LogitsProcessorList, Scores};
use crate::generation::sampler::Sampler;
use crate::generation::strategies::{forward_step, host_scores, StepInput};
use crate::models::{CausalLM, LogitsToKeep};
use crate::TokenId;

pub(crate) use draft_model::DraftModelCandidateGenerator;
pub(crate) use early_exit::EarlyExitCandidateGenerator;
pub(crate) use prompt_lookup::PromptLookupCandidateGenerator;
pub(crate) use universal::UniversalCandidateGenerator;

/// What a generator proposes after the current sequence.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Candidates {
    /// The drafted tokens (possibly none: the round then reduces to one plain decoding step).
    pub tokens: Vec<TokenId>,
    /// The draft's processed scores for each drafted token, `[tokens.len(), vocab]` in the target's
    /// vocabulary; speculative sampling needs them. `None` when the generator has no distribution
    /// (prompt lookup, a draft with another tokenizer): sampling then compares the target's own
    /// draws with the candidates.
    pub scores: Option<Scores>,
}

/// Everything of the decoding loop that a generator may use for one round.
pub(crate) struct DraftContext<'r, 'a> {
    /// The sequence so far (prompt, padding included, and generated tokens).
    pub sequence: &'r [TokenId],
    /// Positions and padding of `sequence`.
    pub layout: &'r RowLayout,
    /// `max_length` of the call (prompt included).
    pub max_length: usize,
    /// The call's logits processors (and warpers when sampling), as the target applies them.
    pub processors: &'r LogitsProcessorList<'a>,
    /// The call's sampler: drafts are drawn as the target draws (argmax, or multinomial).
    pub sampler: &'r mut Sampler,
    /// The call's EOS ids.
    pub eos: &'r [TokenId],
    /// The target's cache, holding the keys and values of `sequence[..sequence.len() - 1]` (or of
    /// nothing on the first round). A generator that drafts with the target's own layers
    /// (early exit) appends to it and must crop it back to that length before returning.
    pub target_cache: &'r mut dyn KvCache,
}

/// HF `CandidateGenerator`: proposes tokens for the target to verify, and learns from the outcome.
#[doc(alias = "transformers.generation.candidate_generator.CandidateGenerator")]
pub(crate) trait CandidateGenerator {
    /// HF `get_candidates`: the tokens to try after `ctx.sequence`.
    fn get_candidates(&mut self, ctx: DraftContext<'_, '_>) -> Result<Candidates>;

    /// HF `update_candidate_strategy`: the target accepted `num_matches` of the `num_candidates`
    /// tokens of the last round; `sequence` is the sequence after that round.
    fn update_candidate_strategy(
        &mut self,
        sequence: &[TokenId],
        num_candidates: usize,
        num_matches: usize,
    );

    /// The draft length the next round would use (`num_assistant_tokens`, or
    /// `prompt_lookup_num_tokens`), reported in the statistics.
    fn num_candidate_tokens(&self) -> usize;
}

/// HF `num_assistant_tokens_schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DraftSchedule {
    /// `"constant"`: `num_assistant_tokens` stays as set.
    Constant,
    /// `"heuristic"`: +2 after a round where every candidate was accepted, else -1 (at least 1).
    /// transformers keeps the value on the assistant model for the next call; lmgen models are
    /// immutable, so it lasts one call (as `"heuristic_transient"`) and the final value is reported in
    /// [`AssistedStats::num_assistant_tokens`] for the caller to pass on.
    Heuristic,
    /// `"heuristic_transient"`: as `"heuristic"`, reset for every call.
    HeuristicTransient,
}

impl DraftSchedule {
    /// Parses the config value, naming the field on error.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "constant" => Ok(DraftSchedule::Constant),
            "heuristic" => Ok(DraftSchedule::Heuristic),
            "heuristic_transient" => Ok(DraftSchedule::HeuristicTransient),
            other => Err(Error::config(format!(
                "`num_assistant_tokens_schedule` must be \"constant\", \"heuristic\" or \"heuristic_transient\", got {other:?}"
            ))),
        }
    }
}

/// The draft length and its schedule (`num_assistant_tokens`, `num_assistant_tokens_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DraftLength {
    pub num_assistant_tokens: usize,
    pub schedule: DraftSchedule,
}

impl DraftLength {
    /// HF `AssistedCandidateGenerator.update_candidate_strategy`, first half:
    /// `num_matches == len(scores[0]) - 1` (every candidate accepted, also when there were none)
    /// adds 2, anything else takes 1 away, never below 1.
    pub fn update(&mut self, num_candidates: usize, num_matches: usize) {
        if self.schedule == DraftSchedule::Constant {
            return;
        }
        if num_matches == num_candidates {
            self.num_assistant_tokens += 2;
        } else {
            self.num_assistant_tokens = self.num_assistant_tokens.saturating_sub(1).max(1);
        }
    }
}

/// What assisted decoding reports (the acceptance statistics; transformers reports none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssistedStats {
    /// Verification rounds (target forward passes).
    pub rounds: usize,
    /// Candidate tokens proposed, over all rounds.
    pub drafted: usize,
    /// Candidate tokens the target accepted (the extra token each round adds is not counted).
    pub accepted: usize,
    /// The draft length the next round would have used: with the `"heuristic"` schedule, the value
    /// transformers would keep on the assistant model for the next call.
    pub num_assistant_tokens: usize,
}

impl AssistedStats {
    /// `accepted / drafted` (0 when nothing was drafted).
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }
}

/// Position ids and padding of one row as it grows: positions are `cumsum(mask) - 1` with padding
/// at position 1, as the other decoding loops compute them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowLayout {
    mask: Vec<u8>,
    positions: Vec<u32>,
    padded: bool,
}

impl RowLayout {
    /// A row of `len` tokens with its attention mask (`None`: no padding).
    pub fn new(mask: Option<&[u8]>, len: usize) -> Self {
        let mut layout = RowLayout {
            mask: Vec::with_capacity(len),
            positions: Vec::with_capacity(len),
            padded: false,
        };
        for i in 0..len {
            layout.push_token(mask.map_or(1, |m| m[i]));
        }
        layout
    }

    fn push_token(&mut self, m: u8) {
        let real = self.mask.iter().filter(|&&x| x == 1).count() as u32;
        self.positions.push(if m == 0 { 1 } else { real });
        self.padded |= m == 0;
        self.mask.push(m);
    }

    /// Appends a real (unpadded) token.
    pub fn push(&mut self) {
        self.push_token(1);
    }

    /// Grows with real tokens or shrinks to `len` tokens.
    pub fn resize(&mut self, len: usize) {
        if len < self.mask.len() {
            self.mask.truncate(len);
            self.positions.truncate(len);
            self.padded = self.mask.contains(&0);
        }
        while self.mask.len() < len {
            self.push();
        }
    }

    /// Position ids of tokens `start..end`.
    pub fn positions(&self, start: usize, end: usize) -> &[u32] {
        &self.positions[start..end]
    }

    /// The mask of tokens `..end` (`None` when the row has no padding).
    pub fn mask(&self, end: usize) -> Option<&[u8]> {
        self.padded.then(|| &self.mask[..end])
    }
}

/// One forward pass of `model` over `ids[cache.seq_len()..]` (all of `ids` are laid out by
/// `layout`), keeping `keep`'s positions: raw logits `[kept, vocab]`.
pub(crate) fn forward_row(
    model: &dyn CausalLM,
    ids: &[TokenId],
    layout: &RowLayout,
    keep: LogitsToKeep,
    num_hidden_layers: Option<usize>,
    cache: &mut dyn KvCache,
) -> Result<Scores> {
    let start = cache.seq_len();
    let end = ids.len();
    if start >= end {
        return Err(Error::input(format!(
            "internal: a forward pass over no token (cache holds {start}, sequence has {end})"
        )));
    }
    let step_ids = Tensor::new(&ids[start..end], model.device())?.unsqueeze(0)?; // [1, t]
    let positions = [layout.positions(start, end).to_vec()];
    let mask = layout.mask(end).map(|m| vec![m.to_vec()]);
    let sequences = [ids.to_vec()];
    let step = StepInput {
        ids: &step_ids,
        positions: &positions,
        mask: mask.as_deref(),
        output_hidden_states: false,
        output_attentions: false,
        logits_to_keep: keep,
        num_hidden_layers,
        sequences: Some(&sequences),
    };
    host_scores(&forward_step(model, step, cache)?.logits) // [kept, vocab]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_schedule_grows_by_two_and_shrinks_by_one() {
        let mut d = DraftLength {
            num_assistant_tokens: 4,
            schedule: DraftSchedule::Heuristic,
        };
        d.update(4, 4);
        assert_eq!(d.num_assistant_tokens, 6);
        d.update(6, 2);
        assert_eq!(d.num_assistant_tokens, 5);
        d.update(0, 0);
        assert_eq!(d.num_assistant_tokens, 7);
        let mut one = DraftLength {
            num_assistant_tokens: 1,
            schedule: DraftSchedule::HeuristicTransient,
        };
        one.update(1, 0);
        assert_eq!(one.num_assistant_tokens, 1);
        let mut c = DraftLength {
            num_assistant_tokens: 4,
            schedule: DraftSchedule::Constant,
        };
        c.update(4, 4);
        assert_eq!(c.num_assistant_tokens, 4);
        assert!(DraftSchedule::parse("linear").is_err());
    }

    #[test]
    fn layout_positions_follow_the_mask_as_it_grows_and_shrinks() {
        let mut l = RowLayout::new(Some(&[0, 0, 1, 1]), 4);
        assert_eq!(l.positions(0, 4), &[1, 1, 0, 1]);
        l.push();
        assert_eq!(l.positions(4, 5), &[2]);
        assert_eq!(l.mask(5), Some(&[0, 0, 1, 1, 1][..]));
        l.resize(3);
        l.resize(5);
        assert_eq!(l.positions(0, 5), &[1, 1, 0, 1, 2]);
        let u = RowLayout::new(None, 3);
        assert_eq!(u.mask(3), None);
        assert_eq!(u.positions(0, 3), &[0, 1, 2]);
    }
}
