//! HF `TemperatureLogitsWarper` (`src/transformers/generation/logits_process.py`): divides the scores by
//! `temperature` (sampling only).

use super::{invalid_arg, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Flattens (> 1) or sharpens (< 1) the distribution.
#[derive(Debug, Clone)]
pub struct TemperatureLogitsWarper {
    temperature: f32,
}

impl TemperatureLogitsWarper {
    pub fn new(temperature: f64) -> Result<Self> {
        if temperature.is_nan() || temperature <= 0.0 {
            let mut message = format!(
                "`temperature` (={temperature}) has to be a strictly positive float, otherwise your next token scores will be invalid."
            );
            if temperature == 0.0 {
                message.push_str(
                    " If you're looking for greedy decoding strategies, set `do_sample=False`.",
                );
            }
            return Err(invalid_arg(message));
        }
        Ok(Self {
            temperature: temperature as f32,
        })
    }
}

impl LogitsProcessor for TemperatureLogitsWarper {
    fn process(&self, _input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        scores.data.iter_mut().for_each(|s| *s /= self.temperature);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divides_and_validates() {
        let mut s = Scores::new(vec![1.0, -2.0], 1, 2);
        TemperatureLogitsWarper::new(2.0)
            .unwrap()
            .process(&[vec![]], &mut s)
            .unwrap();
        assert_eq!(s.data, vec![0.5, -1.0]);
        let e = TemperatureLogitsWarper::new(0.0).unwrap_err().to_string();
        assert!(
            e.contains("`temperature` (=0)") && e.contains("do_sample=False"),
            "{e}"
        );
    }
}
