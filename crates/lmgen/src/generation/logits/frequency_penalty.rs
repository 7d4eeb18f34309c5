//! OpenAI-style `frequency_penalty` (an lmgen extension; transformers has no such processor): every
//! token gets `count * frequency_penalty` subtracted, `count` being how often it was generated so far
//! (the prompt excluded), as OpenAI's `mu[j] - c[j] * alpha_frequency`.

use super::{invalid_arg, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Subtracts a penalty proportional to how often a token was generated. lmgen extension.
#[derive(Debug, Clone)]
pub struct FrequencyPenaltyLogitsProcessor {
    penalty: f32,
    prompt_len: usize,
}

impl FrequencyPenaltyLogitsProcessor {
    /// `frequency_penalty` in [-2, 2] as OpenAI; `prompt_len`: tokens at the start of each row not counted.
    pub fn new(frequency_penalty: f64, prompt_len: usize) -> Result<Self> {
        if frequency_penalty.is_nan() || !(-2.0..=2.0).contains(&frequency_penalty) {
            return Err(invalid_arg(format!(
                "`frequency_penalty` must be in [-2, 2], got {frequency_penalty}"
            )));
        }
        Ok(Self {
            penalty: frequency_penalty as f32,
            prompt_len,
        })
    }
}

impl LogitsProcessor for FrequencyPenaltyLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for (i, ids) in input_ids.iter().enumerate() {
            let row = scores.row_mut(i);
            for &t in ids.iter().skip(self.prompt_len) {
                if let Some(s) = row.get_mut(t as usize) {
                    *s -= self.penalty;
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
    fn penalises_by_count() {
        let p = FrequencyPenaltyLogitsProcessor::new(0.5, 1).unwrap();
        let mut s = Scores::new(vec![0.0; 3], 1, 3);
        p.process(&[vec![2, 1, 1]], &mut s).unwrap();
        assert_eq!(s.data, vec![0.0, -1.0, 0.0]);
        assert!(FrequencyPenaltyLogitsProcessor::new(-2.5, 0).is_err());
    }
}
