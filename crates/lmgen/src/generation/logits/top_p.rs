//! HF `TopPLogitsWarper` (`src/transformers/generation/logits_process.py`): nucleus filtering. Sorted
//! ascending, tokens whose cumulative probability is `<= 1 - top_p` are removed; the
//! `min_tokens_to_keep` most likely always stay.

use super::{check_min_tokens_to_keep, invalid_arg, softmax, sorted_desc, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Top-p (nucleus) filtering.
#[derive(Debug, Clone)]
pub struct TopPLogitsWarper {
    top_p: f32,
    min_tokens_to_keep: usize,
}

impl TopPLogitsWarper {
    pub fn new(top_p: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if top_p.is_nan() || !(0.0..=1.0).contains(&top_p) {
            return Err(invalid_arg(format!(
                "`top_p` has to be a float > 0 and < 1, but is {top_p}"
            )));
        }
        check_min_tokens_to_keep(min_tokens_to_keep)?;
        Ok(Self {
            top_p: top_p as f32,
            min_tokens_to_keep,
        })
    }
}

impl LogitsProcessor for TopPLogitsWarper {
    fn process(&self, _input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for row in scores.rows_mut() {
            // Ascending order, as transformers sorts.
            let mut order = sorted_desc(row);
            order.reverse();
            let sorted: Vec<f32> = order.iter().map(|&i| row[i]).collect();
            let probs = softmax(&sorted);
            let n = order.len();
            let mut cum = 0.0f32;
            let mut remove = Vec::with_capacity(n);
            for (j, p) in probs.iter().enumerate() {
                cum += p;
                remove.push(cum <= 1.0 - self.top_p && j + self.min_tokens_to_keep < n);
            }
            for (j, &i) in order.iter().enumerate() {
                if remove[j] {
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
    fn keeps_the_smallest_prefix_reaching_top_p() {
        let l = |p: f32| p.ln();
        let mut s = Scores::new(vec![l(0.5), l(0.3), l(0.2)], 1, 3);
        TopPLogitsWarper::new(0.7, 1)
            .unwrap()
            .process(&[vec![]], &mut s)
            .unwrap();
        assert_eq!(s.data[2], f32::NEG_INFINITY);
        assert!(s.data[1].is_finite());
        let e = TopPLogitsWarper::new(1.5, 1).unwrap_err().to_string();
        assert!(
            e.contains("`top_p` has to be a float > 0 and < 1, but is 1.5"),
            "{e}"
        );
    }
}
