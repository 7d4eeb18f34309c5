//! The per-row state of a token-by-token loop, shared by greedy search / sampling, DoLa and
//! contrastive search: what HF `_sample`, `_dola_decoding` and `_contrastive_search` keep in
//! `input_ids`, `unfinished_sequences` and `model_kwargs` (attention mask, positions).
//!
//! Each step: the loop feeds [`DecodeState::positions`] / [`DecodeState::mask`] to the model, picks
//! one token per row, and [`DecodeState::push`]es it (rows already finished get the pad id, only when
//! an EOS criterion exists, as `has_eos_stopping_criteria`); unless every row is done,
//! [`DecodeState::extend`] then makes room for the next token.

use crate::error::{Error, Result};
use crate::generation::stopping::{FinishReason, StoppingCriteriaList};
use crate::generation::streamer::TokenStreamer;
use crate::generation::{GenerateInput, ResolvedGeneration};
use crate::TokenId;

use super::sample::position_ids;

/// Sequences, padding mask, positions and finish reasons of the rows being decoded.
#[derive(Debug)]
pub(crate) struct DecodeState {
    /// `[b][prompt + generated]`.
    pub sequences: Vec<Vec<TokenId>>,
    /// `[b][past + t]` padding mask over cached and fed tokens; `None` = no padding.
    mask: Option<Vec<Vec<u8>>>,
    /// `[b][t]` positions of the tokens fed next.
    positions: Vec<Vec<u32>>,
    /// Position of each row's next token.
    next_pos: Vec<u32>,
    /// Why each row stopped, `None` while running.
    pub finish: Vec<Option<FinishReason>>,
    /// The id finished rows get: the pad id when an EOS criterion exists, else none (they keep
    /// their real tokens, as transformers).
    pad_finished: Option<TokenId>,
    /// The pad id is the first EOS id (`pad_token_id` unset), for the error that names it.
    pad_from_eos: bool,
}

impl DecodeState {
    /// The state before prefill: the prompt rows of `input`, positions `cumsum(mask) - 1`.
    pub fn new(input: &GenerateInput, g: &ResolvedGeneration) -> Self {
        let (b, t) = (input.input_ids.len(), input.input_ids[0].len());
        let mask = input.attention_mask.clone();
        let next_pos = match &mask {
            None => vec![t as u32; b],
            Some(m) => m
                .iter()
                .map(|r| r.iter().map(|&x| x as u32).sum())
                .collect(),
        };
        let pad_finished = if g.eos_token_id.is_empty() {
            None
        } else {
            g.pad_token_id
        };
        Self {
            positions: position_ids(mask.as_deref(), b, t),
            sequences: input.input_ids.clone(),
            mask,
            next_pos,
            finish: vec![None; b],
            pad_finished,
            pad_from_eos: g.pad_from_eos,
        }
    }

    /// The padding mask for the next forward (`[b][past + t]`), `None` without padding.
    pub fn mask(&self) -> Option<&[Vec<u8>]> {
        self.mask.as_deref()
    }

    /// Positions of the tokens fed next, `[b][t]`.
    pub fn positions(&self) -> &[Vec<u32>] {
        &self.positions
    }

    /// Appends each row's chosen token: finished rows get the pad id (when an EOS criterion
    /// exists; `next` is rewritten), the streamer gets the step, and the stopping criteria run on
    /// rows still going. Returns whether every row is done.
    pub fn push(
        &mut self,
        next: &mut [TokenId],
        streamer: Option<&mut (dyn TokenStreamer + '_)>,
        stopping: &mut StoppingCriteriaList<'_>,
    ) -> Result<bool> {
        if let Some(pad) = self.pad_finished {
            for (tok, finish) in next.iter_mut().zip(&self.finish) {
                if finish.is_some() {
                    *tok = pad;
                }
            }
        }
        if let Some(s) = streamer {
            s.put(next)?;
        }
        for ((row, finish), &tok) in self.sequences.iter_mut().zip(&mut self.finish).zip(&*next) {
            row.push(tok);
            if finish.is_none() {
                *finish = stopping.check(row);
            }
        }
        Ok(self.finish.iter().all(Option::is_some))
    }

    /// Every row still running stops for `reason` (a criterion over the whole batch).
    pub fn finish_all(&mut self, reason: FinishReason) {
        for finish in self.finish.iter_mut().filter(|f| f.is_none()) {
            *finish = Some(reason);
        }
    }

    /// Makes room for one more token per row: the mask gets a 1, positions move on by one.
    pub fn extend(&mut self) {
        if let Some(m) = self.mask.as_mut() {
            m.iter_mut().for_each(|r| r.push(1));
        }
        self.positions = self.next_pos.iter().map(|&p| vec![p]).collect();
        self.next_pos.iter_mut().for_each(|p| *p += 1);
    }

    /// The pad id finished rows are fed next, when it is outside the vocabulary and some row has
    /// finished: an error naming the field it came from (transformers fails there with an
    /// IndexError).
    pub fn check_pad_fed(&self, vocab_size: usize) -> Result<()> {
        let Some(pad) = self.pad_finished.filter(|&p| p as usize >= vocab_size) else {
            return Ok(());
        };
        if !self.finish.iter().any(Option::is_some) {
            return Ok(());
        }
        let field = if self.pad_from_eos {
            "`eos_token_id` (the pad id while `pad_token_id` is unset)"
        } else {
            "`pad_token_id`"
        };
        Err(Error::config(format!(
            "{field} {pad} is outside the vocabulary (vocab_size {vocab_size}); rows that finish early \
             are padded with it and fed to the model, so set `pad_token_id` to an id below {vocab_size}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::config::Lengths;
    use crate::generation::Mode;

    #[test]
    fn finished_rows_get_the_pad_id_and_positions_advance() -> Result<()> {
        let g = ResolvedGeneration {
            mode: Mode::Greedy,
            batch: 2,
            prompt_len: 2,
            lengths: Lengths {
                max_length: 10,
                min_length: 0,
            },
            eos_token_id: vec![9],
            pad_token_id: Some(0),
            pad_from_eos: false,
            num_return_sequences: 1,
            output_scores: false,
            output_logits: false,
            output_hidden_states: false,
            output_attentions: false,
            prefill_chunk_size: None,
            cache: crate::cache::CacheImplementation::Dynamic,
            confidence_threshold: None,
            encoder: None,
        };
        let input = GenerateInput {
            input_ids: vec![vec![0, 5], vec![4, 5]],
            attention_mask: Some(vec![vec![0, 1], vec![1, 1]]),
        };
        let mut state = DecodeState::new(&input, &g);
        assert_eq!(state.positions(), &[vec![0, 0], vec![0, 1]]);
        let mut stopping = StoppingCriteriaList::new(10, &[9]);
        assert!(!state.push(&mut [9, 3], None, &mut stopping)?);
        state.extend();
        assert_eq!(state.positions(), &[vec![1], vec![2]]);
        assert_eq!(state.mask(), Some(&[vec![0, 1, 1], vec![1, 1, 1]][..]));
        let mut next = [7, 9];
        assert!(state.push(&mut next, None, &mut stopping)?);
        assert_eq!(next, [0, 9]);
        assert_eq!(state.sequences, vec![vec![0, 5, 9, 0], vec![4, 5, 3, 9]]);
        assert_eq!(state.finish[0], Some(FinishReason::Eos));
        Ok(())
    }
}
