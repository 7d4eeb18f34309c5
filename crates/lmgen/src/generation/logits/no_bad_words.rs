//! HF `NoBadWordsLogitsProcessor` (`src/transformers/generation/logits_process.py`): a sequence bias of
//! `-inf` on the last token of every bad word whose other tokens end the input. Single-token bad words
//! equal to an EOS id are dropped, as transformers does.

use super::{invalid_arg, LogitsProcessor, Scores, SequenceBiasLogitsProcessor};
use crate::error::Result;
use crate::TokenId;

/// Bans token sequences (`bad_words_ids`).
#[derive(Debug, Clone)]
pub struct NoBadWordsLogitsProcessor {
    inner: Option<SequenceBiasLogitsProcessor>,
}

impl NoBadWordsLogitsProcessor {
    pub fn new(bad_words_ids: Vec<Vec<TokenId>>, eos_token_ids: &[TokenId]) -> Result<Self> {
        if bad_words_ids.is_empty() {
            return Err(invalid_arg(format!(
                "`bad_words_ids` has to be a non-empty list, but is {bad_words_ids:?}."
            )));
        }
        if bad_words_ids.iter().any(Vec::is_empty) {
            return Err(invalid_arg(format!(
                "Each list in `bad_words_ids` has to be a non-empty list of positive integers, but is {bad_words_ids:?}."
            )));
        }
        let mut biases: Vec<(Vec<TokenId>, f32)> = Vec::new();
        for word in bad_words_ids {
            if word.len() == 1 && eos_token_ids.contains(&word[0]) {
                continue;
            }
            if !biases.iter().any(|(w, _)| *w == word) {
                biases.push((word, f32::NEG_INFINITY));
            }
        }
        Ok(Self {
            inner: (!biases.is_empty()).then(|| SequenceBiasLogitsProcessor::from_checked(biases)),
        })
    }
}

impl LogitsProcessor for NoBadWordsLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        match &self.inner {
            Some(p) => p.process(input_ids, scores),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_words_but_not_a_lone_eos() {
        let p = NoBadWordsLogitsProcessor::new(vec![vec![1], vec![2], vec![0, 3]], &[2]).unwrap();
        let mut s = Scores::new(vec![0.0; 4], 1, 4);
        p.process(&[vec![5, 0]], &mut s).unwrap();
        assert_eq!(s.data, vec![0.0, f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY]);
        assert!(NoBadWordsLogitsProcessor::new(vec![], &[]).is_err());
    }
}
