//! HF `EncoderRepetitionPenaltyLogitsProcessor` (`src/transformers/generation/logits_process.py`): the
//! repetition penalty inverted (`1 / penalty`) on the tokens of the encoder input, so `penalty > 1`
//! rewards them. For a decoder-only model transformers' `generate()` passes the prompt
//! (`inputs_tensor`, padding included) as the encoder input, so it applies there too.

use super::{invalid_arg, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Rewards (p > 1) or penalises tokens of the prompt (`encoder_repetition_penalty`).
#[derive(Debug, Clone)]
pub struct EncoderRepetitionPenaltyLogitsProcessor {
    /// `1 / penalty`.
    penalty: f32,
    encoder_input_ids: Vec<Vec<TokenId>>,
}

impl EncoderRepetitionPenaltyLogitsProcessor {
    pub fn new(penalty: f64, encoder_input_ids: Vec<Vec<TokenId>>) -> Result<Self> {
        if penalty.is_nan() || penalty <= 0.0 {
            return Err(invalid_arg(format!(
                "`penalty` has to be a strictly positive float, but is {penalty}"
            )));
        }
        Ok(Self {
            penalty: (1.0 / penalty) as f32,
            encoder_input_ids,
        })
    }
}

impl LogitsProcessor for EncoderRepetitionPenaltyLogitsProcessor {
    fn process(&self, _input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for (i, ids) in self.encoder_input_ids.iter().enumerate().take(scores.batch) {
            let row = scores.row_mut(i);
            // gather, then scatter: every occurrence sees the original score.
            let updates: Vec<(usize, f32)> = ids
                .iter()
                .filter_map(|&t| {
                    let s = *row.get(t as usize)?;
                    let v = if s < 0.0 {
                        s * self.penalty
                    } else {
                        s / self.penalty
                    };
                    Some((t as usize, v))
                })
                .collect();
            for (t, v) in updates {
                row[t] = v;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewards_prompt_tokens_once() {
        let p = EncoderRepetitionPenaltyLogitsProcessor::new(2.0, vec![vec![0, 1, 1]]).unwrap();
        let mut s = Scores::new(vec![1.0, -1.0, 3.0], 1, 3);
        p.process(&[vec![2]], &mut s).unwrap();
        assert_eq!(s.data, vec![2.0, -0.5, 3.0]);
        assert!(EncoderRepetitionPenaltyLogitsProcessor::new(0.0, vec![]).is_err());
    }
}
