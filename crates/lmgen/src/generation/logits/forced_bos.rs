//! HF `ForcedBOSTokenLogitsProcessor` (`src/transformers/generation/logits_process.py`): at the first
//! position (`cur_len == 1`, the decoder start token of an encoder-decoder model) every token but
//! `bos_token_id` gets `-inf` and it gets 0. With a decoder-only prompt `cur_len` is never 1 after the
//! prompt, so it changes nothing there, as in transformers.

use super::{LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Forces `forced_bos_token_id` first.
#[derive(Debug, Clone)]
pub struct ForcedBOSTokenLogitsProcessor {
    bos_token_id: TokenId,
}

impl ForcedBOSTokenLogitsProcessor {
    pub fn new(bos_token_id: TokenId) -> Self {
        Self { bos_token_id }
    }
}

/// Every score of `row` to `-inf` but `ids`, which get 0.
pub(super) fn force(row: &mut [f32], ids: &[TokenId]) {
    row.iter_mut().for_each(|s| *s = f32::NEG_INFINITY);
    for &t in ids {
        if let Some(s) = row.get_mut(t as usize) {
            *s = 0.0;
        }
    }
}

impl LogitsProcessor for ForcedBOSTokenLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        if input_ids.first().map_or(0, Vec::len) == 1 {
            scores
                .rows_mut()
                .for_each(|row| force(row, &[self.bos_token_id]));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forces_only_at_length_one() {
        let p = ForcedBOSTokenLogitsProcessor::new(1);
        let mut s = Scores::new(vec![5.0, 1.0], 1, 2);
        p.process(&[vec![0]], &mut s).unwrap();
        assert_eq!(s.data, vec![f32::NEG_INFINITY, 0.0]);
        let mut s = Scores::new(vec![5.0, 1.0], 1, 2);
        p.process(&[vec![0, 0]], &mut s).unwrap();
        assert_eq!(s.data, vec![5.0, 1.0]);
    }
}
