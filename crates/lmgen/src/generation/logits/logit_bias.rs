//! OpenAI-style `logit_bias` (an lmgen extension; transformers' nearest is `sequence_bias` with
//! single-token sequences): adds a bias in [-100, 100] to the listed tokens at every step.

use super::{invalid_arg, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Adds a fixed bias per token. lmgen extension.
#[derive(Debug, Clone)]
pub struct LogitBiasLogitsProcessor {
    bias: Vec<(TokenId, f32)>,
}

impl LogitBiasLogitsProcessor {
    /// `logit_bias`: token id -> bias in [-100, 100], as OpenAI.
    pub fn new(logit_bias: impl IntoIterator<Item = (TokenId, f64)>) -> Result<Self> {
        let mut bias = Vec::new();
        for (t, b) in logit_bias {
            if b.is_nan() || !(-100.0..=100.0).contains(&b) {
                return Err(invalid_arg(format!(
                    "`logit_bias` values must be in [-100, 100], got {b} for token {t}"
                )));
            }
            bias.push((t, b as f32));
        }
        Ok(Self { bias })
    }
}

impl LogitsProcessor for LogitBiasLogitsProcessor {
    fn process(&self, _input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let vocab = scores.vocab;
        if let Some((t, _)) = self.bias.iter().find(|(t, _)| *t as usize >= vocab) {
            return Err(invalid_arg(format!(
                "`logit_bias` token {t} is outside the vocabulary (size {vocab})"
            )));
        }
        for row in scores.rows_mut() {
            for &(t, b) in &self.bias {
                row[t as usize] += b;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_bias_and_checks_range() {
        let p = LogitBiasLogitsProcessor::new([(1, -100.0)]).unwrap();
        let mut s = Scores::new(vec![0.0; 2], 1, 2);
        p.process(&[vec![]], &mut s).unwrap();
        assert_eq!(s.data, vec![0.0, -100.0]);
        assert!(LogitBiasLogitsProcessor::new([(1, 101.0)]).is_err());
        let far = LogitBiasLogitsProcessor::new([(5, 1.0)]).unwrap();
        assert!(far.process(&[vec![]], &mut s).is_err());
    }
}
