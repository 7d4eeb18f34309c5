//! HF `SuppressTokensAtBeginLogitsProcessor` (`src/transformers/generation/logits_process.py`): the
//! listed tokens get `-inf` only when `cur_len == begin_index` (the first generated position;
//! `generate()` uses the prompt length, plus one when the prompt is one token and
//! `forced_bos_token_id` is set).

use super::suppress_tokens::suppress;
use super::{LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Suppresses tokens at the first generated position (`begin_suppress_tokens`).
#[derive(Debug, Clone)]
pub struct SuppressTokensAtBeginLogitsProcessor {
    begin_suppress_tokens: Vec<TokenId>,
    begin_index: usize,
}

impl SuppressTokensAtBeginLogitsProcessor {
    pub fn new(begin_suppress_tokens: Vec<TokenId>, begin_index: usize) -> Self {
        Self {
            begin_suppress_tokens,
            begin_index,
        }
    }
}

impl LogitsProcessor for SuppressTokensAtBeginLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        if input_ids.first().map_or(0, Vec::len) == self.begin_index {
            suppress(&self.begin_suppress_tokens, scores);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppresses_only_at_begin_index() {
        let p = SuppressTokensAtBeginLogitsProcessor::new(vec![0], 2);
        let mut s = Scores::new(vec![1.0, 2.0], 1, 2);
        p.process(&[vec![5, 5, 5]], &mut s).unwrap();
        assert_eq!(s.data, vec![1.0, 2.0]);
        p.process(&[vec![5, 5]], &mut s).unwrap();
        assert_eq!(s.data, vec![f32::NEG_INFINITY, 2.0]);
    }
}
