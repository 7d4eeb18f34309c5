//! HF `MinNewTokensLengthLogitsProcessor` (`logits_process.py`): EOS ids get `-inf` until
//! `min_new_tokens` tokens have been generated after the (padded) prompt.

use super::min_length::ban_eos;
use super::{LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Forbids EOS before `min_new_tokens` new tokens.
#[derive(Debug, Clone)]
pub struct MinNewTokensLengthLogitsProcessor {
    prompt_length_to_skip: usize,
    min_new_tokens: usize,
    eos_token_ids: Vec<TokenId>,
}

impl MinNewTokensLengthLogitsProcessor {
    pub fn new(
        prompt_length_to_skip: usize,
        min_new_tokens: usize,
        eos_token_ids: Vec<TokenId>,
    ) -> Self {
        Self {
            prompt_length_to_skip,
            min_new_tokens,
            eos_token_ids,
        }
    }
}

impl LogitsProcessor for MinNewTokensLengthLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let cur_len = input_ids.first().map_or(0, Vec::len);
        if cur_len.saturating_sub(self.prompt_length_to_skip) < self.min_new_tokens {
            ban_eos(&self.eos_token_ids, scores);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_new_tokens() {
        let p = MinNewTokensLengthLogitsProcessor::new(2, 1, vec![0]);
        let mut s = Scores::new(vec![1.0, 0.0], 1, 2);
        p.process(&[vec![5, 5]], &mut s).unwrap();
        assert_eq!(s.data[0], f32::NEG_INFINITY);
        let mut s = Scores::new(vec![1.0, 0.0], 1, 2);
        p.process(&[vec![5, 5, 5]], &mut s).unwrap();
        assert_eq!(s.data[0], 1.0);
    }
}
