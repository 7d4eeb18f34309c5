//! HF `SequenceBiasLogitsProcessor` (`src/transformers/generation/logits_process.py`): adds a bias to
//! the last token of a sequence when the tokens before it end the current input (single-token
//! sequences are biased at every step).

use super::{invalid_arg, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Biases token sequences (`sequence_bias`, `[[ids], bias]` pairs; a later duplicate wins, as in a dict).
#[derive(Debug, Clone)]
pub struct SequenceBiasLogitsProcessor {
    /// Distinct sequences in first-seen order, each with its last bias.
    biases: Vec<(Vec<TokenId>, f32)>,
}

impl SequenceBiasLogitsProcessor {
    pub fn new(sequence_bias: Vec<(Vec<TokenId>, f64)>) -> Result<Self> {
        if sequence_bias.is_empty() {
            return Err(invalid_arg(
                "`sequence_bias` has to be a non-empty dictionary, or non-empty list of lists."
                    .into(),
            ));
        }
        let mut biases: Vec<(Vec<TokenId>, f32)> = Vec::new();
        for (ids, bias) in sequence_bias {
            if ids.is_empty() {
                return Err(invalid_arg(
                    "Each key in `sequence_bias` has to be a non-empty tuple of positive integers, but is ()."
                        .into(),
                ));
            }
            match biases.iter_mut().find(|(s, _)| *s == ids) {
                Some(entry) => entry.1 = bias as f32,
                None => biases.push((ids, bias as f32)),
            }
        }
        Ok(Self { biases })
    }

    /// For [`super::NoBadWordsLogitsProcessor`]: biases with no validation left to do.
    pub(super) fn from_checked(biases: Vec<(Vec<TokenId>, f32)>) -> Self {
        Self { biases }
    }
}

impl LogitsProcessor for SequenceBiasLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let vocab = scores.vocab;
        let invalid: Vec<TokenId> = self
            .biases
            .iter()
            .flat_map(|(s, _)| s.iter().copied())
            .filter(|&t| t as usize >= vocab)
            .collect();
        if !invalid.is_empty() {
            return Err(invalid_arg(format!(
                "The model vocabulary size is {vocab}, but the following tokens were being biased: {invalid:?}"
            )));
        }
        for (i, ids) in input_ids.iter().enumerate() {
            // Bias per row, added at once (transformers builds a bias tensor and adds it).
            let mut bias = vec![0.0f32; vocab];
            for (seq, b) in &self.biases {
                let last = seq[seq.len() - 1] as usize;
                if seq.len() == 1 {
                    bias[last] = *b;
                }
            }
            for (seq, b) in &self.biases {
                if seq.len() == 1 || seq.len() > ids.len() {
                    continue;
                }
                let prefix = &seq[..seq.len() - 1];
                if ids[ids.len() - prefix.len()..] == *prefix {
                    bias[seq[seq.len() - 1] as usize] += *b;
                }
            }
            for (s, b) in scores.row_mut(i).iter_mut().zip(bias) {
                *s += b;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn biases_single_tokens_and_matching_prefixes() {
        let p = SequenceBiasLogitsProcessor::new(vec![
            (vec![1], 2.0),
            (vec![3, 2], -1.0),
            (vec![4, 2], 5.0),
            (vec![1], 1.0),
        ])
        .unwrap();
        let mut s = Scores::new(vec![0.0; 5], 1, 5);
        p.process(&[vec![0, 3]], &mut s).unwrap();
        assert_eq!(s.data, vec![0.0, 1.0, -1.0, 0.0, 0.0]);
    }

    #[test]
    fn rejects_empty_and_out_of_vocabulary() {
        assert!(SequenceBiasLogitsProcessor::new(vec![]).is_err());
        let p = SequenceBiasLogitsProcessor::new(vec![(vec![9], 1.0)]).unwrap();
        let mut s = Scores::new(vec![0.0; 5], 1, 5);
        assert!(p.process(&[vec![0]], &mut s).is_err());
    }
}
