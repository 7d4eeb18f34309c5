//! HF `TopHLogitsWarper` (`src/transformers/generation/logits_process.py`, Top-H decoding): over the 100
//! best tokens, keeps the longest prefix whose cumulative entropy `-p log p` (p renormalised over those
//! tokens) stays within `top_h` times their entropy; the best token always stays.

use super::{invalid_arg, softmax, sorted_desc, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// How many of the best tokens Top-H considers (transformers' `top_n`).
const TOP_N: usize = 100;

/// Entropy-bounded truncation.
#[derive(Debug, Clone)]
pub struct TopHLogitsWarper {
    top_h: f32,
}

impl TopHLogitsWarper {
    pub fn new(top_h: f64) -> Result<Self> {
        if top_h.is_nan() || top_h <= 0.0 || top_h > 1.0 {
            return Err(invalid_arg(format!(
                "`top_h` has to be a float in the (0, 1] interval, but is {top_h}"
            )));
        }
        Ok(Self {
            top_h: top_h as f32,
        })
    }
}

impl LogitsProcessor for TopHLogitsWarper {
    fn process(&self, _input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for row in scores.rows_mut() {
            let order = sorted_desc(row);
            let top: Vec<usize> = order.iter().copied().take(TOP_N).collect();
            let logits: Vec<f32> = top.iter().map(|&i| row[i]).collect();
            // As torch: `probs = softmax`, `log(probs)`; a zero probability gives a NaN term, which
            // removes it and everything after it, while the entropy `tau` counts it as 0.
            let probs = softmax(&logits);
            let terms: Vec<f32> = probs.iter().map(|&p| -p * p.ln()).collect();
            let tau = terms.iter().filter(|t| !t.is_nan()).sum::<f32>() * self.top_h;
            let mut keep = vec![false; row.len()];
            let mut cum = 0.0f32;
            for (j, (&i, t)) in top.iter().zip(&terms).enumerate() {
                cum += t;
                keep[i] = j == 0 || cum <= tau;
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
    fn keeps_the_best_token_and_validates() {
        let mut s = Scores::new(vec![5.0, 0.0, -1.0], 1, 3);
        TopHLogitsWarper::new(0.1)
            .unwrap()
            .process(&[vec![]], &mut s)
            .unwrap();
        assert_eq!(s.data[0], 5.0);
        assert_eq!(s.data[2], f32::NEG_INFINITY);
        assert!(TopHLogitsWarper::new(0.0).is_err());
    }
}
