//! HF `LogitNormalization` (`src/transformers/generation/logits_process.py`): log-softmax of the
//! scores, applied last (`renormalize_logits`), so that beam scores stay log-probabilities.

use super::{log_softmax, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Log-softmax of every row.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogitNormalization;

impl LogitsProcessor for LogitNormalization {
    fn process(&self, _input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for row in scores.rows_mut() {
            let l = log_softmax(row);
            row.copy_from_slice(&l);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_log_probabilities() {
        let mut s = Scores::new(vec![1.0, 1.0, f32::NEG_INFINITY], 1, 3);
        LogitNormalization.process(&[vec![]], &mut s).unwrap();
        assert!((s.data[0] - 0.5f32.ln()).abs() < 1e-6);
        assert_eq!(s.data[2], f32::NEG_INFINITY);
    }
}
