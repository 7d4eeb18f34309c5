//! HF `PrefixConstrainedLogitsProcessor` (`src/transformers/generation/logits_process.py`): only the
//! tokens that `prefix_allowed_tokens_fn(batch_id, tokens)` returns stay; the others get `-inf`.

use std::sync::Arc;

use super::{invalid_arg, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// transformers' `prefix_allowed_tokens_fn`: `(batch_id, tokens so far) -> allowed next tokens`.
pub type PrefixAllowedTokensFn = Arc<dyn Fn(usize, &[TokenId]) -> Vec<TokenId> + Send + Sync>;

/// Constrained generation by a callback.
#[derive(Clone)]
pub struct PrefixConstrainedLogitsProcessor {
    prefix_allowed_tokens_fn: PrefixAllowedTokensFn,
    num_beams: usize,
}

impl std::fmt::Debug for PrefixConstrainedLogitsProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PrefixConstrainedLogitsProcessor(num_beams={})",
            self.num_beams
        )
    }
}

impl PrefixConstrainedLogitsProcessor {
    pub fn new(prefix_allowed_tokens_fn: PrefixAllowedTokensFn, num_beams: usize) -> Self {
        Self {
            prefix_allowed_tokens_fn,
            num_beams: num_beams.max(1),
        }
    }
}

impl LogitsProcessor for PrefixConstrainedLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for (i, ids) in input_ids.iter().enumerate() {
            let batch_id = i / self.num_beams;
            let allowed = (self.prefix_allowed_tokens_fn)(batch_id, ids);
            if allowed.is_empty() {
                return Err(invalid_arg(format!(
                    "`prefix_allowed_tokens_fn` returned an empty list for batch ID {batch_id}. This means that \
                     the constraint is unsatisfiable. Please check your implementation of `prefix_allowed_tokens_fn`"
                )));
            }
            let row = scores.row_mut(i);
            let mut keep = vec![false; row.len()];
            for t in allowed {
                if let Some(k) = keep.get_mut(t as usize) {
                    *k = true;
                }
            }
            for (s, k) in row.iter_mut().zip(keep) {
                if !k {
                    *s = f32::NEG_INFINITY;
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
    fn keeps_only_allowed_tokens() {
        let p = PrefixConstrainedLogitsProcessor::new(
            Arc::new(|b, ids: &[TokenId]| vec![(b + ids.len()) as TokenId]),
            1,
        );
        let mut s = Scores::new(vec![1.0; 6], 2, 3);
        p.process(&[vec![0], vec![0]], &mut s).unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(s.data, vec![inf, 1.0, inf, inf, inf, 1.0]);
        let empty = PrefixConstrainedLogitsProcessor::new(Arc::new(|_, _: &[TokenId]| vec![]), 1);
        assert!(empty
            .process(&[vec![0]], &mut Scores::new(vec![0.0], 1, 1))
            .is_err());
    }
}
