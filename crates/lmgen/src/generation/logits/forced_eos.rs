//! HF `ForcedEOSTokenLogitsProcessor` (`src/transformers/generation/logits_process.py`): at the last
//! position (`cur_len == max_length - 1`) every token but the EOS ids gets `-inf` and they get 0.

use super::forced_bos::force;
use super::{LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Forces `forced_eos_token_id` when `max_length` is reached.
#[derive(Debug, Clone)]
pub struct ForcedEOSTokenLogitsProcessor {
    max_length: usize,
    eos_token_ids: Vec<TokenId>,
}

impl ForcedEOSTokenLogitsProcessor {
    pub fn new(max_length: usize, eos_token_ids: Vec<TokenId>) -> Self {
        Self {
            max_length,
            eos_token_ids,
        }
    }
}

impl LogitsProcessor for ForcedEOSTokenLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        if input_ids.first().map_or(0, Vec::len) + 1 == self.max_length {
            scores
                .rows_mut()
                .for_each(|row| force(row, &self.eos_token_ids));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forces_eos_at_the_last_position() {
        let p = ForcedEOSTokenLogitsProcessor::new(3, vec![0, 2]);
        let mut s = Scores::new(vec![1.0, 9.0, 1.0], 1, 3);
        p.process(&[vec![1, 1]], &mut s).unwrap();
        assert_eq!(s.data, vec![0.0, f32::NEG_INFINITY, 0.0]);
        let mut s = Scores::new(vec![1.0, 9.0, 1.0], 1, 3);
        p.process(&[vec![1]], &mut s).unwrap();
        assert_eq!(s.data, vec![1.0, 9.0, 1.0]);
    }
}
