//! HF `ExponentialDecayLengthPenalty` (`src/transformers/generation/logits_process.py`): after
//! `start_index` new tokens, EOS scores grow by `|s| * (decay_factor^(cur_len - start) - 1)`.

use super::{LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Raises EOS exponentially with length (`exponential_decay_length_penalty`).
#[derive(Debug, Clone)]
pub struct ExponentialDecayLengthPenalty {
    regulation_start: usize,
    regulation_factor: f64,
    eos_token_ids: Vec<TokenId>,
}

impl ExponentialDecayLengthPenalty {
    /// `exponential_decay_length_penalty`: `(start_index, decay_factor)`; `input_ids_seq_length`: the
    /// prompt length.
    pub fn new(
        exponential_decay_length_penalty: (usize, f64),
        eos_token_ids: Vec<TokenId>,
        input_ids_seq_length: usize,
    ) -> Self {
        Self {
            // Past `usize::MAX` the penalty never starts (Python's integers do not overflow).
            regulation_start: exponential_decay_length_penalty
                .0
                .saturating_add(input_ids_seq_length),
            regulation_factor: exponential_decay_length_penalty.1,
            eos_token_ids,
        }
    }
}

impl LogitsProcessor for ExponentialDecayLengthPenalty {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let cur_len = input_ids.first().map_or(0, Vec::len);
        if cur_len <= self.regulation_start {
            return Ok(());
        }
        let idx = i32::try_from(cur_len - self.regulation_start).unwrap_or(i32::MAX);
        let factor = (self.regulation_factor.powi(idx) - 1.0) as f32;
        for row in scores.rows_mut() {
            for &e in &self.eos_token_ids {
                if let Some(s) = row.get_mut(e as usize) {
                    *s += s.abs() * factor;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_grows_after_the_start() {
        let p = ExponentialDecayLengthPenalty::new((1, 2.0), vec![0], 2);
        let mut s = Scores::new(vec![-1.0, 1.0], 1, 2);
        p.process(&[vec![0, 0, 0]], &mut s).unwrap();
        assert_eq!(s.data, vec![-1.0, 1.0]);
        p.process(&[vec![0, 0, 0, 0, 0]], &mut s).unwrap();
        assert_eq!(s.data, vec![2.0, 1.0]);
    }

    #[test]
    fn a_start_past_usize_max_never_comes() {
        let p = ExponentialDecayLengthPenalty::new((usize::MAX, 2.0), vec![0], 3);
        let mut s = Scores::new(vec![-1.0, 1.0], 1, 2);
        p.process(&[vec![0; 8]], &mut s).unwrap();
        assert_eq!(s.data, vec![-1.0, 1.0]);
    }
}
