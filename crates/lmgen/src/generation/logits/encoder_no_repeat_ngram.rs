//! HF `EncoderNoRepeatNGramLogitsProcessor` (`src/transformers/generation/logits_process.py`): bans
//! tokens that would repeat an n-gram of the encoder input. For a decoder-only model transformers'
//! `generate()` passes the prompt (`inputs_tensor`) as the encoder input, so it applies there too.

use std::collections::HashMap;

use super::no_repeat_ngram::{ban, py_slice};
use super::{invalid_arg, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Blocks n-grams of the prompt (`encoder_no_repeat_ngram_size`).
#[derive(Debug, Clone)]
pub struct EncoderNoRepeatNGramLogitsProcessor {
    ngram_size: usize,
    /// Per encoder row: n-gram prefix -> following tokens.
    generated_ngrams: Vec<HashMap<Vec<TokenId>, Vec<TokenId>>>,
}

impl EncoderNoRepeatNGramLogitsProcessor {
    pub fn new(encoder_ngram_size: usize, encoder_input_ids: &[Vec<TokenId>]) -> Result<Self> {
        if encoder_ngram_size == 0 {
            return Err(invalid_arg(format!(
                "`encoder_ngram_size` has to be a strictly positive integer, but is {encoder_ngram_size}"
            )));
        }
        let generated_ngrams = encoder_input_ids
            .iter()
            .map(|row| {
                super::no_repeat_ngram::ngrams(encoder_ngram_size, row)
                    .into_iter()
                    .map(|(k, v)| (k.to_vec(), v))
                    .collect()
            })
            .collect();
        Ok(Self {
            ngram_size: encoder_ngram_size,
            generated_ngrams,
        })
    }
}

impl LogitsProcessor for EncoderNoRepeatNGramLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let batch = self.generated_ngrams.len().max(1);
        let num_beams = (input_ids.len() / batch).max(1);
        for (i, ids) in input_ids.iter().enumerate() {
            let Some(map) = self.generated_ngrams.get(i / num_beams) else {
                continue;
            };
            let cur_len = ids.len();
            let start = cur_len as isize + 1 - self.ngram_size as isize;
            let prefix = py_slice(ids, start, cur_len);
            if let Some(banned) = map.get(prefix) {
                ban(scores.row_mut(i), banned);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_continuations_of_prompt_ngrams() {
        let p = EncoderNoRepeatNGramLogitsProcessor::new(2, &[vec![1, 2, 1, 3]]).unwrap();
        let mut s = Scores::new(vec![0.0; 4], 1, 4);
        p.process(&[vec![0, 1]], &mut s).unwrap();
        assert_eq!(s.data, vec![0.0, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        assert!(EncoderNoRepeatNGramLogitsProcessor::new(0, &[]).is_err());
    }
}
