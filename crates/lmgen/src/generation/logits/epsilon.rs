//! HF `EpsilonLogitsWarper` (`src/transformers/generation/logits_process.py`, epsilon sampling):
//! removes tokens with probability below `epsilon`; the `min_tokens_to_keep` best stay.

use super::{invalid_arg, kth_largest, softmax, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Epsilon filtering (`epsilon_cutoff`).
#[derive(Debug, Clone)]
pub struct EpsilonLogitsWarper {
    epsilon: f32,
    min_tokens_to_keep: usize,
}

impl EpsilonLogitsWarper {
    pub fn new(epsilon: f64, min_tokens_to_keep: usize) -> Result<Self> {
        let epsilon = checked_cutoff("epsilon_cutoff", epsilon, min_tokens_to_keep)?;
        Ok(Self {
            epsilon,
            min_tokens_to_keep,
        })
    }
}

/// Checks a cutoff warper's arguments as transformers does (`field` names the cutoff in the
/// error): the cutoff in (0, 1), `min_tokens_to_keep` at least 1. Returns the cutoff in f32.
pub(super) fn checked_cutoff(field: &str, cutoff: f64, min_tokens_to_keep: usize) -> Result<f32> {
    if cutoff.is_nan() || cutoff <= 0.0 || cutoff >= 1.0 {
        return Err(invalid_arg(format!(
            "`{field}` has to be a float > 0 and < 1, but is {cutoff}"
        )));
    }
    if min_tokens_to_keep < 1 {
        return Err(invalid_arg(format!(
            "`min_tokens_to_keep` has to be a strictly positive integer, but is {min_tokens_to_keep}"
        )));
    }
    Ok(cutoff as f32)
}

/// Removes `p < threshold` except scores at least the `keep`-th largest.
pub(super) fn cut_below(row: &mut [f32], probs: &[f32], threshold: f32, keep: usize) {
    let kth = kth_largest(row, keep.min(row.len()));
    for (s, &p) in row.iter_mut().zip(probs) {
        if p < threshold && *s < kth {
            *s = f32::NEG_INFINITY;
        }
    }
}

impl LogitsProcessor for EpsilonLogitsWarper {
    fn process(&self, _input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for row in scores.rows_mut() {
            let probs = softmax(row);
            cut_below(row, &probs, self.epsilon, self.min_tokens_to_keep);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_unlikely_tokens() {
        let l = |p: f32| p.ln();
        let mut s = Scores::new(vec![l(0.9), l(0.08), l(0.02)], 1, 3);
        EpsilonLogitsWarper::new(0.05, 1)
            .unwrap()
            .process(&[vec![]], &mut s)
            .unwrap();
        assert!(s.data[1].is_finite());
        assert_eq!(s.data[2], f32::NEG_INFINITY);
        assert!(EpsilonLogitsWarper::new(1.0, 1).is_err());
    }
}
