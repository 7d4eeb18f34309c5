//! HF `EtaLogitsWarper` (`src/transformers/generation/logits_process.py`, eta sampling): removes tokens
//! with probability below `eta = min(epsilon, sqrt(epsilon) * exp(-entropy))` (transformers' code uses
//! the minimum); the `min_tokens_to_keep` best stay.

use super::epsilon::{checked_cutoff, cut_below};
use super::{softmax, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Eta filtering (`eta_cutoff`).
#[derive(Debug, Clone)]
pub struct EtaLogitsWarper {
    epsilon: f32,
    min_tokens_to_keep: usize,
}

impl EtaLogitsWarper {
    pub fn new(epsilon: f64, min_tokens_to_keep: usize) -> Result<Self> {
        let epsilon = checked_cutoff("eta_cutoff", epsilon, min_tokens_to_keep)?;
        Ok(Self {
            epsilon,
            min_tokens_to_keep,
        })
    }
}

impl LogitsProcessor for EtaLogitsWarper {
    fn process(&self, _input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for row in scores.rows_mut() {
            let probs = softmax(row);
            let logp = super::log_softmax(row);
            // torch's Categorical entropy: -sum(p * logp) with logp clamped to the f32 minimum.
            let entropy: f32 = -probs
                .iter()
                .zip(&logp)
                .map(|(&p, &l)| p * l.max(f32::MIN))
                .sum::<f32>();
            let eta = self.epsilon.min(self.epsilon.sqrt() * (-entropy).exp());
            cut_below(row, &probs, eta, self.min_tokens_to_keep);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_below_eta() {
        let l = |p: f32| p.ln();
        let mut s = Scores::new(vec![l(0.97), l(0.02), l(0.01)], 1, 3);
        EtaLogitsWarper::new(0.5, 1)
            .unwrap()
            .process(&[vec![]], &mut s)
            .unwrap();
        assert!(s.data[0].is_finite());
        assert_eq!(s.data[2], f32::NEG_INFINITY);
        assert!(EtaLogitsWarper::new(0.0, 1).is_err());
    }
}
