//! HF `TopKLogitsWarper` (`src/transformers/generation/logits_process.py`): keeps the tokens scoring at
//! least the k-th largest score (ties with it are all kept), `k = max(top_k, min_tokens_to_keep)`.

use super::{check_min_tokens_to_keep, invalid_arg, kth_largest, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Top-k filtering.
#[derive(Debug, Clone)]
pub struct TopKLogitsWarper {
    top_k: usize,
}

impl TopKLogitsWarper {
    pub fn new(top_k: usize, min_tokens_to_keep: usize) -> Result<Self> {
        if top_k == 0 {
            return Err(invalid_arg(format!(
                "`top_k` has to be a strictly positive integer, but is {top_k}"
            )));
        }
        check_min_tokens_to_keep(min_tokens_to_keep)?;
        Ok(Self {
            top_k: top_k.max(min_tokens_to_keep),
        })
    }
}

impl LogitsProcessor for TopKLogitsWarper {
    fn process(&self, _input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let k = self.top_k.min(scores.vocab);
        for row in scores.rows_mut() {
            let threshold = kth_largest(row, k);
            row.iter_mut()
                .filter(|s| **s < threshold)
                .for_each(|s| *s = f32::NEG_INFINITY);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_ties_with_the_kth() {
        let mut s = Scores::new(vec![3.0, 1.0, 2.0, 2.0], 1, 4);
        TopKLogitsWarper::new(2, 1)
            .unwrap()
            .process(&[vec![]], &mut s)
            .unwrap();
        assert_eq!(s.data, vec![3.0, f32::NEG_INFINITY, 2.0, 2.0]);
        assert!(TopKLogitsWarper::new(0, 1).is_err());
        assert!(TopKLogitsWarper::new(1, 0).is_err());
    }
}
