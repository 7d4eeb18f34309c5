//! HF `HammingDiversityLogitsProcessor` (`logits_process.py`): diverse (group) beam search's penalty
//! on tokens that earlier groups chose at the same step.

use super::Scores;
use crate::error::{Error, Result};
use crate::TokenId;

/// Subtracts `diversity_penalty` times the number of earlier groups' beams (same batch item, this
/// step) that picked a token from that token's score. It needs the step's tokens so far and the
/// group index, so group beam search calls [`Self::process_group`] itself rather than through a
/// [`super::LogitsProcessorList`].
#[derive(Debug, Clone, PartialEq)]
pub struct HammingDiversityLogitsProcessor {
    diversity_penalty: f32,
    num_beams: usize,
    num_sub_beams: usize,
}

impl HammingDiversityLogitsProcessor {
    /// HF `HammingDiversityLogitsProcessor(diversity_penalty, num_beams, num_beam_groups)`.
    pub fn new(diversity_penalty: f32, num_beams: usize, num_beam_groups: usize) -> Result<Self> {
        if diversity_penalty.is_nan() || diversity_penalty <= 0.0 {
            return Err(Error::config(
                "`diversity_penalty` should be a float strictly larger than 0",
            ));
        }
        if num_beams < 2 {
            return Err(Error::config(
                "`num_beams` should be an integer strictly larger than 1",
            ));
        }
        if num_beam_groups < 2 || num_beam_groups > num_beams {
            return Err(Error::config(
                "`num_beam_groups` should be an integer strictly larger than 1 and at most `num_beams`",
            ));
        }
        Ok(Self {
            diversity_penalty,
            num_beams,
            num_sub_beams: num_beams / num_beam_groups,
        })
    }

    /// Penalises `scores` (`[batch * group_size, vocab]`, the rows of group `group_idx`) by the
    /// tokens in `current_tokens` (`[batch * num_beams]`, this step's picks; only the earlier groups'
    /// entries are read).
    pub fn process_group(
        &self,
        current_tokens: &[TokenId],
        group_idx: usize,
        scores: &mut Scores,
    ) -> Result<()> {
        let start = group_idx * self.num_sub_beams;
        if start == 0 {
            return Ok(());
        }
        let group_size = self.num_sub_beams.min(self.num_beams - start);
        let batch = current_tokens.len() / self.num_beams;
        let vocab = scores.vocab;
        for i in 0..batch {
            let mut frequency = vec![0u32; vocab];
            for &tok in &current_tokens[i * self.num_beams..i * self.num_beams + start] {
                let slot = frequency.get_mut(tok as usize).ok_or_else(|| {
                    Error::input(format!(
                        "token {tok} is outside the vocabulary ({vocab}) of the scores"
                    ))
                })?;
                *slot += 1;
            }
            for r in i * group_size..(i + 1) * group_size {
                for (s, &f) in scores.row_mut(r).iter_mut().zip(&frequency) {
                    *s -= self.diversity_penalty * f as f32;
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
    fn penalises_earlier_groups_tokens_only() {
        let p = HammingDiversityLogitsProcessor::new(0.5, 4, 2).unwrap();
        // one batch item, 4 beams: group 0 picked tokens 1 and 1
        let current = [1, 1, 0, 0];
        let mut s = Scores::new(vec![0.0; 6], 2, 3);
        p.process_group(&current, 0, &mut s).unwrap();
        assert_eq!(s.data, vec![0.0; 6]);
        p.process_group(&current, 1, &mut s).unwrap();
        assert_eq!(s.data, vec![0.0, -1.0, 0.0, 0.0, -1.0, 0.0]);
        assert!(HammingDiversityLogitsProcessor::new(0.0, 4, 2).is_err());
    }
}
