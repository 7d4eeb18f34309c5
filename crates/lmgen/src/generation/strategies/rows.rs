//! The model side of a beam loop: `[b * num_beams]` rows decoding together over one KV cache, the
//! cache reordered by source beam after each step (HF `_reorder_cache`). The attention mask and
//! position ids stay with the row slot, as in transformers, where only the cache is reordered.

use candle_core::Tensor;

use super::prefill::prefill;
use super::sample::position_ids;
use super::{host_scores, next_token_logits, StepInput};
use crate::cache::KvCache;
use crate::error::Result;
use crate::generation::{GenerateInput, Scores};
use crate::models::CausalLM;
use crate::TokenId;

/// Rows of a beam loop and their cache.
pub(super) struct BeamRows<'m> {
    model: &'m dyn CausalLM,
    cache: Box<dyn KvCache>,
    /// `[rows, cached + step]` attention mask; `None` while nothing is padded.
    mask: Option<Vec<Vec<u8>>>,
    /// `[rows, step]` positions of the next forward.
    positions: Vec<Vec<u32>>,
    /// `[rows]` position of each row's next token.
    next_pos: Vec<u32>,
    /// `[rows, step]` ids of the next forward.
    step_ids: Tensor,
    /// `prefill_chunk_size`: the prompt's forward runs in chunks of this many tokens.
    prefill_chunk_size: Option<usize>,
}

impl<'m> BeamRows<'m> {
    /// Rows for the (already expanded) prompt `input`, `[rows, t]`, over the empty `cache`,
    /// whose forward runs in chunks of `prefill_chunk_size` tokens when that is set.
    pub(super) fn new(
        model: &'m dyn CausalLM,
        input: &GenerateInput,
        cache: Box<dyn KvCache>,
        prefill_chunk_size: Option<usize>,
    ) -> Result<Self> {
        let rows = input.input_ids.len();
        let t = input.input_ids.first().map_or(0, Vec::len);
        let mask = input.attention_mask.clone();
        let positions = position_ids(mask.as_deref(), rows, t);
        let next_pos = match &mask {
            None => vec![t as u32; rows],
            Some(m) => m
                .iter()
                .map(|r| r.iter().map(|&x| x as u32).sum())
                .collect(),
        };
        let step_ids = Tensor::new(input.input_ids.clone(), model.device())?; // [rows, t]
        Ok(Self {
            model,
            cache,
            mask,
            positions,
            next_pos,
            step_ids,
            prefill_chunk_size,
        })
    }

    /// Runs the model over the pending step; the last position's raw logits, `[rows, vocab]`.
    /// `sequences`: every row's tokens so far, the pending step's last.
    pub(super) fn logits(&mut self, sequences: &[Vec<TokenId>]) -> Result<Scores> {
        let step = StepInput::last(&self.step_ids, &self.positions, self.mask.as_deref())
            .with_sequences(sequences);
        if self.cache.seq_len() == 0 {
            let out = prefill(
                self.model,
                step,
                self.prefill_chunk_size,
                self.cache.as_mut(),
            )?;
            return host_scores(&out.logits.squeeze(1)?); // [rows, 1, vocab] -> [rows, vocab]
        }
        next_token_logits(self.model, step, self.cache.as_mut())
    }

    /// Next step: row `i` continues the cache of row `source[i]` with `tokens[i]`.
    pub(super) fn advance(&mut self, source: &[usize], tokens: &[TokenId]) -> Result<()> {
        self.cache.reorder(source)?;
        if let Some(m) = self.mask.as_mut() {
            m.iter_mut().for_each(|r| r.push(1));
        }
        self.positions = self.next_pos.iter().map(|&p| vec![p]).collect();
        self.next_pos.iter_mut().for_each(|p| *p += 1);
        let last: Vec<Vec<TokenId>> = tokens.iter().map(|&t| vec![t]).collect();
        self.step_ids = Tensor::new(last, self.model.device())?; // [rows, 1]
        Ok(())
    }

    /// Tokens in the cache.
    pub(super) fn cached(&self) -> usize {
        self.cache.seq_len()
    }
}
