//! HF `RepetitionPenaltyLogitsProcessor` (CTRL, <https://arxiv.org/abs/1909.05858>),
//! `logits_process.py`: every token already present (prompt and generated, each id once) gets
//! `s * p` if its score is negative, else `s / p`. Leading padding of each row is ignored
//! (`prompt_ignore_length`).

use super::{LogitsProcessor, Scores};
use crate::error::{Error, Result};
use crate::TokenId;

/// Penalises (p > 1) or rewards (0 < p < 1) tokens already in the sequence.
#[derive(Debug, Clone)]
pub struct RepetitionPenaltyLogitsProcessor {
    penalty: f32,
    /// Per row, how many leading tokens to ignore.
    prompt_ignore_length: Vec<usize>,
}

impl RepetitionPenaltyLogitsProcessor {
    /// `penalty` must be strictly positive, as transformers requires.
    pub fn new(penalty: f64, prompt_ignore_length: Vec<usize>) -> Result<Self> {
        if !(penalty > 0.0) {
            return Err(Error::GenerationConfig(format!(
                "`repetition_penalty` has to be a strictly positive float, got {penalty}"
            )));
        }
        Ok(Self {
            penalty: penalty as f32,
            prompt_ignore_length,
        })
    }
}

impl LogitsProcessor for RepetitionPenaltyLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let vocab = scores.vocab;
        for (i, ids) in input_ids.iter().enumerate() {
            let skip = self
                .prompt_ignore_length
                .get(i)
                .copied()
                .unwrap_or(0)
                .min(ids.len());
            let row = scores.row_mut(i);
            let mut seen = vec![false; vocab];
            for &id in &ids[skip..] {
                let id = id as usize;
                // Ids outside the logits' vocabulary are ignored, as transformers does.
                if id >= vocab || seen[id] {
                    continue;
                }
                seen[id] = true;
                let s = row[id];
                row[id] = if s < 0.0 {
                    s * self.penalty
                } else {
                    s / self.penalty
                };
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalises_each_seen_token_once_and_skips_padding() {
        let p = RepetitionPenaltyLogitsProcessor::new(2.0, vec![1]).unwrap();
        let mut s = Scores::new(vec![4.0, -4.0, 4.0, 1.0], 1, 4);
        p.process(&[vec![2, 0, 1, 1]], &mut s).unwrap();
        assert_eq!(s.data, vec![2.0, -8.0, 4.0, 1.0]);
    }

    #[test]
    fn rejects_non_positive_penalty() {
        assert!(RepetitionPenaltyLogitsProcessor::new(0.0, vec![]).is_err());
    }
}
