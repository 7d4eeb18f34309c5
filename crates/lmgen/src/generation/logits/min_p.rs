//! HF `MinPLogitsWarper` (`src/transformers/generation/logits_process.py`): removes tokens whose
//! probability is below `min_p` times the top probability; the `min_tokens_to_keep` best stay.

use super::{check_min_tokens_to_keep, invalid_arg, softmax, sorted_desc, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Min-p filtering.
#[derive(Debug, Clone)]
pub struct MinPLogitsWarper {
    min_p: f32,
    min_tokens_to_keep: usize,
}

impl MinPLogitsWarper {
    pub fn new(min_p: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if min_p.is_nan() || !(0.0..=1.0).contains(&min_p) {
            return Err(invalid_arg(format!(
                "`min_p` has to be a float in the [0, 1] interval, but is {min_p}"
            )));
        }
        check_min_tokens_to_keep(min_tokens_to_keep)?;
        Ok(Self {
            min_p: min_p as f32,
            min_tokens_to_keep,
        })
    }
}

impl LogitsProcessor for MinPLogitsWarper {
    fn process(&self, _input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for row in scores.rows_mut() {
            let probs = softmax(row);
            let top = probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let threshold = self.min_p * top;
            let order = sorted_desc(row);
            for (rank, &i) in order.iter().enumerate() {
                if rank >= self.min_tokens_to_keep && probs[i] < threshold {
                    row[i] = f32::NEG_INFINITY;
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
    fn removes_below_the_scaled_top_probability() {
        let l = |p: f32| p.ln();
        let mut s = Scores::new(vec![l(0.6), l(0.3), l(0.1)], 1, 3);
        MinPLogitsWarper::new(0.4, 1)
            .unwrap()
            .process(&[vec![]], &mut s)
            .unwrap();
        assert!(s.data[1].is_finite());
        assert_eq!(s.data[2], f32::NEG_INFINITY);
        assert!(MinPLogitsWarper::new(1.5, 1).is_err());
    }
}
