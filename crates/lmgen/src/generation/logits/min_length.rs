//! HF `MinLengthLogitsProcessor` (`logits_process.py`): EOS ids get `-inf` while the sequence
//! (prompt and padding included) is shorter than `min_length`.

use super::{LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Forbids EOS before `min_length` total tokens.
#[derive(Debug, Clone)]
pub struct MinLengthLogitsProcessor {
    min_length: usize,
    eos_token_ids: Vec<TokenId>,
}

impl MinLengthLogitsProcessor {
    pub fn new(min_length: usize, eos_token_ids: Vec<TokenId>) -> Self {
        Self {
            min_length,
            eos_token_ids,
        }
    }
}

/// Sets every in-vocabulary EOS id of every row to -inf.
pub(super) fn ban_eos(eos: &[TokenId], scores: &mut Scores) {
    for i in 0..scores.batch {
        let row = scores.row_mut(i);
        for &e in eos {
            if let Some(s) = row.get_mut(e as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
}

impl LogitsProcessor for MinLengthLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let cur_len = input_ids.first().map_or(0, Vec::len);
        if cur_len < self.min_length {
            ban_eos(&self.eos_token_ids, scores);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_eos_until_min_length() {
        let p = MinLengthLogitsProcessor::new(3, vec![1]);
        let mut s = Scores::new(vec![0.0, 5.0], 1, 2);
        p.process(&[vec![0, 0]], &mut s).unwrap();
        assert_eq!(s.data, vec![0.0, f32::NEG_INFINITY]);
        let mut s = Scores::new(vec![0.0, 5.0], 1, 2);
        p.process(&[vec![0, 0, 0]], &mut s).unwrap();
        assert_eq!(s.data, vec![0.0, 5.0]);
    }
}
