//! HF `TypicalLogitsWarper` (`src/transformers/generation/logits_process.py`, locally typical sampling):
//! keeps the tokens whose surprisal is closest to the entropy until their mass reaches `mass`.

use super::{check_min_tokens_to_keep, invalid_arg, log_softmax, softmax, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Locally typical filtering (`typical_p`).
#[derive(Debug, Clone)]
pub struct TypicalLogitsWarper {
    mass: f32,
    min_tokens_to_keep: usize,
}

impl TypicalLogitsWarper {
    pub fn new(mass: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if mass.is_nan() || mass <= 0.0 || mass >= 1.0 {
            return Err(invalid_arg(format!(
                "`typical_p` has to be a float > 0 and < 1, but is {mass}"
            )));
        }
        check_min_tokens_to_keep(min_tokens_to_keep)?;
        Ok(Self {
            mass: mass as f32,
            min_tokens_to_keep,
        })
    }
}

impl LogitsProcessor for TypicalLogitsWarper {
    fn process(&self, _input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for row in scores.rows_mut() {
            let logp = log_softmax(row);
            // nansum: -inf scores give 0 * -inf = NaN, skipped.
            let ent: f32 = -logp
                .iter()
                .map(|&l| l * l.exp())
                .filter(|x| !x.is_nan())
                .sum::<f32>();
            let shifted: Vec<f32> = logp.iter().map(|&l| (-l - ent).abs()).collect();
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| {
                shifted[a]
                    .partial_cmp(&shifted[b])
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            let sorted_logits: Vec<f32> = order.iter().map(|&i| row[i]).collect();
            let probs = softmax(&sorted_logits);
            let mut cum = 0.0f32;
            let mut last_ind = 0usize;
            for p in &probs {
                cum += p;
                if cum < self.mass {
                    last_ind += 1;
                }
            }
            let last_ind = last_ind.min(row.len().saturating_sub(1));
            let cutoff = shifted[order[last_ind]];
            for (rank, &i) in order.iter().enumerate() {
                if rank >= self.min_tokens_to_keep && shifted[i] > cutoff {
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
    fn keeps_the_typical_set() {
        let l = |p: f32| p.ln();
        let mut s = Scores::new(vec![l(0.7), l(0.2), l(0.1)], 1, 3);
        TypicalLogitsWarper::new(0.5, 1)
            .unwrap()
            .process(&[vec![]], &mut s)
            .unwrap();
        assert_eq!(s.data.iter().filter(|x| x.is_finite()).count(), 1);
        assert!(TypicalLogitsWarper::new(1.0, 1).is_err());
    }
}
