//! HF `InfNanRemoveLogitsProcessor` (`src/transformers/generation/logits_process.py`): NaN becomes 0,
//! `+inf` the largest finite f32 and `-inf` the smallest (`remove_invalid_values`).

use super::{LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Replaces NaN and infinities so that sampling cannot fail on them.
#[derive(Debug, Clone, Copy, Default)]
pub struct InfNanRemoveLogitsProcessor;

impl LogitsProcessor for InfNanRemoveLogitsProcessor {
    fn process(&self, _input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for s in &mut scores.data {
            if s.is_nan() {
                *s = 0.0;
            } else if *s == f32::INFINITY {
                *s = f32::MAX;
            } else if *s == f32::NEG_INFINITY {
                *s = f32::MIN;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_nan_and_infinities() {
        let mut s = Scores::new(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.5], 1, 4);
        InfNanRemoveLogitsProcessor
            .process(&[vec![]], &mut s)
            .unwrap();
        assert_eq!(s.data, vec![0.0, f32::MAX, f32::MIN, 1.5]);
    }
}
