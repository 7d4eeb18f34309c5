//! HF `SuppressTokensLogitsProcessor` (`src/transformers/generation/logits_process.py`): the listed
//! tokens get `-inf` at every step (`suppress_tokens`; ids outside the vocabulary are ignored).

use super::{LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Suppresses tokens at every step.
#[derive(Debug, Clone)]
pub struct SuppressTokensLogitsProcessor {
    suppress_tokens: Vec<TokenId>,
}

impl SuppressTokensLogitsProcessor {
    pub fn new(suppress_tokens: Vec<TokenId>) -> Self {
        Self { suppress_tokens }
    }
}

/// `-inf` on every in-vocabulary id of `tokens`, in every row.
pub(super) fn suppress(tokens: &[TokenId], scores: &mut Scores) {
    for row in scores.rows_mut() {
        for &t in tokens {
            if let Some(s) = row.get_mut(t as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
}

impl LogitsProcessor for SuppressTokensLogitsProcessor {
    fn process(&self, _input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        suppress(&self.suppress_tokens, scores);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppresses_listed_tokens() {
        let p = SuppressTokensLogitsProcessor::new(vec![1, 7]);
        let mut s = Scores::new(vec![1.0, 2.0], 1, 2);
        p.process(&[vec![0]], &mut s).unwrap();
        assert_eq!(s.data, vec![1.0, f32::NEG_INFINITY]);
    }
}
