//! OpenAI-style `presence_penalty` (an lmgen extension; transformers has no such processor): every
//! token generated so far (the prompt excluded) gets `presence_penalty` subtracted once, as OpenAI's
//! `mu[j] - float(c[j] > 0) * alpha_presence`.

use super::{invalid_arg, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Subtracts a flat penalty from tokens already generated. lmgen extension.
#[derive(Debug, Clone)]
pub struct PresencePenaltyLogitsProcessor {
    penalty: f32,
    prompt_len: usize,
}

impl PresencePenaltyLogitsProcessor {
    /// `presence_penalty` in [-2, 2] as OpenAI; `prompt_len`: tokens at the start of each row not counted.
    pub fn new(presence_penalty: f64, prompt_len: usize) -> Result<Self> {
        if presence_penalty.is_nan() || !(-2.0..=2.0).contains(&presence_penalty) {
            return Err(invalid_arg(format!(
                "`presence_penalty` must be in [-2, 2], got {presence_penalty}"
            )));
        }
        Ok(Self {
            penalty: presence_penalty as f32,
            prompt_len,
        })
    }
}

impl LogitsProcessor for PresencePenaltyLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for (i, ids) in input_ids.iter().enumerate() {
            let row = scores.row_mut(i);
            let mut seen = vec![false; row.len()];
            for &t in ids.iter().skip(self.prompt_len) {
                if let Some(s) = seen.get_mut(t as usize) {
                    if !*s {
                        *s = true;
                        row[t as usize] -= self.penalty;
                    }
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
    fn penalises_generated_tokens_once() {
        let p = PresencePenaltyLogitsProcessor::new(1.0, 1).unwrap();
        let mut s = Scores::new(vec![0.0; 3], 1, 3);
        p.process(&[vec![0, 1, 1]], &mut s).unwrap();
        assert_eq!(s.data, vec![0.0, -1.0, 0.0]);
        assert!(PresencePenaltyLogitsProcessor::new(3.0, 0).is_err());
    }
}
