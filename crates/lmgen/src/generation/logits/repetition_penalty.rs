//! HF `RepetitionPenaltyLogitsProcessor` (CTRL, <https://arxiv.org/abs/1909.05858>),
//! `logits_process.py`: every token already present (prompt and generated, each id once) gets
//! `s * p` if its score is negative, else `s / p`. Padding tokens count too, as in transformers'
//! `generate()`, which builds this processor without `prompt_ignore_length` (pinned by the golden
//! `llama/repetition_penalty` case, whose padding is the EOS id). `prompt_ignore_length` skips
//! the first tokens of every row, as the constructor argument of the same name.

use super::{LogitsProcessor, Scores};
use crate::error::{Error, Result};
use crate::TokenId;

/// Penalises (p > 1) or rewards (0 < p < 1) tokens already in the sequence.
#[derive(Debug, Clone)]
pub struct RepetitionPenaltyLogitsProcessor {
    penalty: f32,
    /// How many leading tokens of every row to ignore.
    prompt_ignore_length: usize,
}

impl RepetitionPenaltyLogitsProcessor {
    /// `penalty` must be strictly positive, as transformers requires.
    pub fn new(penalty: f64, prompt_ignore_length: Option<usize>) -> Result<Self> {
        if penalty.is_nan() || penalty <= 0.0 {
            return Err(Error::config(format!(
                "`repetition_penalty` has to be a strictly positive float, got {penalty}"
            )));
        }
        Ok(Self {
            penalty: penalty as f32,
            prompt_ignore_length: prompt_ignore_length.unwrap_or(0),
        })
    }
}

impl LogitsProcessor for RepetitionPenaltyLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let vocab = scores.vocab;
        for (i, ids) in input_ids.iter().enumerate() {
            let skip = self.prompt_ignore_length.min(ids.len());
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
    fn penalises_each_seen_token_once_after_the_ignored_prefix() {
        let p = RepetitionPenaltyLogitsProcessor::new(2.0, Some(1)).unwrap();
        let mut s = Scores::new(vec![4.0, -4.0, 4.0, 1.0], 1, 4);
        p.process(&[vec![2, 0, 1, 1]], &mut s).unwrap();
        assert_eq!(s.data, vec![2.0, -8.0, 4.0, 1.0]);
    }

    #[test]
    fn rejects_non_positive_penalty() {
        assert!(RepetitionPenaltyLogitsProcessor::new(0.0, None).is_err());
    }
}
