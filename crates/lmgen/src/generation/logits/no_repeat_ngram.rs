//! HF `NoRepeatNGramLogitsProcessor` (`src/transformers/generation/logits_process.py`, from fairseq):
//! bans every token that would complete an n-gram already present in the input (prompt included).

use std::collections::HashMap;

use super::{invalid_arg, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Blocks repeated n-grams of size `ngram_size` (`no_repeat_ngram_size`).
#[derive(Debug, Clone)]
pub struct NoRepeatNGramLogitsProcessor {
    ngram_size: usize,
}

impl NoRepeatNGramLogitsProcessor {
    pub fn new(ngram_size: usize) -> Result<Self> {
        if ngram_size == 0 {
            return Err(invalid_arg(format!(
                "`ngram_size` has to be a strictly positive integer, but is {ngram_size}"
            )));
        }
        Ok(Self { ngram_size })
    }
}

/// transformers' `_get_ngrams` for one row: n-gram prefix -> tokens that followed it.
pub(super) fn ngrams(n: usize, tokens: &[TokenId]) -> HashMap<&[TokenId], Vec<TokenId>> {
    let mut map: HashMap<&[TokenId], Vec<TokenId>> = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            map.entry(&w[..n - 1]).or_default().push(w[n - 1]);
        }
    }
    map
}

/// Sets the scores of `banned` tokens (those inside the vocabulary) to -inf.
pub(super) fn ban(row: &mut [f32], banned: &[TokenId]) {
    for &t in banned {
        if let Some(s) = row.get_mut(t as usize) {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// Python's `tokens[start:end]` with a possibly negative `start`.
pub(super) fn py_slice(tokens: &[TokenId], start: isize, end: usize) -> &[TokenId] {
    let len = tokens.len() as isize;
    let s = if start < 0 {
        (len + start).max(0)
    } else {
        start.min(len)
    } as usize;
    let e = end.min(tokens.len());
    if s >= e {
        &[]
    } else {
        &tokens[s..e]
    }
}

impl LogitsProcessor for NoRepeatNGramLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let n = self.ngram_size;
        for (i, ids) in input_ids.iter().enumerate() {
            let cur_len = ids.len();
            if cur_len + 1 < n {
                continue;
            }
            let map = ngrams(n, ids);
            let prefix = &ids[cur_len + 1 - n..];
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
    fn bans_completions_of_seen_bigrams() {
        let p = NoRepeatNGramLogitsProcessor::new(2).unwrap();
        let mut s = Scores::new(vec![0.0; 4], 1, 4);
        p.process(&[vec![1, 2, 1, 3, 1]], &mut s).unwrap();
        assert_eq!(s.data, vec![0.0, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        assert!(NoRepeatNGramLogitsProcessor::new(0).is_err());
    }

    #[test]
    fn unigrams_ban_every_seen_token() {
        let p = NoRepeatNGramLogitsProcessor::new(1).unwrap();
        let mut s = Scores::new(vec![0.0; 3], 1, 3);
        p.process(&[vec![2]], &mut s).unwrap();
        assert_eq!(s.data, vec![0.0, 0.0, f32::NEG_INFINITY]);
    }
}
