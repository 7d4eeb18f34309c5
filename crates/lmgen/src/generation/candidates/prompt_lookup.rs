//! HF `PromptLookupCandidateGenerator` (`candidate_generator.py`): prompt lookup decoding. The last
//! n-gram of the sequence is searched for earlier in the sequence (sizes `max_matching_ngram_size`
//! down to 1, leftmost match first); the tokens that followed it are the candidates. No draft model,
//! no draft distribution: the candidates are checked against the target's choices.
//!
//! As transformers: candidates the logits processors would forbid (score `-inf` when the processors
//! run on all-ones logits) are cut off, a match with no allowed candidate moves on to the next match,
//! and candidates stop before the first EOS.

use super::{CandidateGenerator, Candidates, DraftContext};
use crate::error::{Error, Result};
use crate::generation::logits::{LogitsProcessorList, Scores};
use crate::TokenId;

/// Candidates copied from earlier in the sequence.
#[derive(Debug, Clone)]
pub struct PromptLookupCandidateGenerator {
    num_output_tokens: usize,
    max_matching_ngram_size: usize,
    vocab_size: usize,
}

impl PromptLookupCandidateGenerator {
    /// `prompt_lookup_num_tokens` candidates per round after a match of at most
    /// `max_matching_ngram_size` tokens (transformers' default when unset: 2).
    pub fn new(
        prompt_lookup_num_tokens: usize,
        max_matching_ngram_size: usize,
        vocab_size: usize,
    ) -> Result<Self> {
        if prompt_lookup_num_tokens == 0 || max_matching_ngram_size == 0 {
            return Err(Error::config(format!(
                "`prompt_lookup_num_tokens` ({prompt_lookup_num_tokens}) and `max_matching_ngram_size` \
                 ({max_matching_ngram_size}) must be at least 1"
            )));
        }
        Ok(Self {
            num_output_tokens: prompt_lookup_num_tokens,
            max_matching_ngram_size,
            vocab_size,
        })
    }

    /// The candidates after `ids` (HF `get_candidates` for one row).
    pub fn lookup(
        &self,
        ids: &[TokenId],
        max_length: usize,
        processors: Option<&LogitsProcessorList<'_>>,
        eos: &[TokenId],
    ) -> Result<Vec<TokenId>> {
        let len = ids.len();
        // The target adds one token of its own: never draft up to `max_length`.
        if max_length == len + 1 {
            return Ok(Vec::new());
        }
        let largest = self.max_matching_ngram_size.min(len.saturating_sub(1));
        for size in (1..=largest).rev() {
            let ngram = &ids[len - size..];
            for start in 0..=len - size {
                if &ids[start..start + size] != ngram {
                    continue;
                }
                let from = start + size;
                let to = (from + self.num_output_tokens).min(len).min(max_length);
                if from >= to {
                    continue;
                }
                let mut chosen = ids[from..to].to_vec();
                if let Some(processors) = processors {
                    let allowed = self.allowed_prefix(ids, &chosen, processors)?;
                    chosen.truncate(allowed);
                    if chosen.is_empty() {
                        continue;
                    }
                }
                if let Some(first_eos) = chosen.iter().position(|t| eos.contains(t)) {
                    chosen.truncate(first_eos);
                }
                return Ok(chosen);
            }
        }
        Ok(Vec::new())
    }

    /// How many of `chosen` the processors allow in turn, judged on all-ones logits.
    fn allowed_prefix(
        &self,
        ids: &[TokenId],
        chosen: &[TokenId],
        processors: &LogitsProcessorList<'_>,
    ) -> Result<usize> {
        let mut rows = vec![ids.to_vec()];
        for (i, &tok) in chosen.iter().enumerate() {
            let mut fake = Scores::new(vec![1.0; self.vocab_size], 1, self.vocab_size);
            processors.process(&rows, &mut fake)?;
            let v = fake
                .row(0)
                .get(tok as usize)
                .copied()
                .unwrap_or(f32::NEG_INFINITY);
            if v == f32::NEG_INFINITY || v == f32::MIN {
                return Ok(i);
            }
            rows[0].push(tok);
        }
        Ok(chosen.len())
    }
}

impl CandidateGenerator for PromptLookupCandidateGenerator {
    fn get_candidates(&mut self, ctx: DraftContext<'_, '_>) -> Result<Candidates> {
        let tokens = self.lookup(ctx.sequence, ctx.max_length, Some(ctx.processors), ctx.eos)?;
        Ok(Candidates {
            tokens,
            scores: None,
        })
    }

    /// Nothing to learn (as transformers).
    fn update_candidate_strategy(&mut self, _: &[TokenId], _: usize, _: usize) {}

    fn num_candidate_tokens(&self) -> usize {
        self.num_output_tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::logits::SuppressTokensLogitsProcessor;

    fn gen(n: usize, ngram: usize) -> PromptLookupCandidateGenerator {
        PromptLookupCandidateGenerator::new(n, ngram, 20).unwrap()
    }

    #[test]
    fn longest_ngram_first_then_leftmost_match() {
        // Last bigram (3, 4) occurs at 1; the unigram 4 also occurs at 5 (ignored: bigram wins).
        let ids = [1, 3, 4, 7, 8, 4, 9, 3, 4];
        assert_eq!(
            gen(3, 2).lookup(&ids, 100, None, &[]).unwrap(),
            vec![7, 8, 4]
        );
        // Unigrams only: the leftmost 4 (index 2).
        assert_eq!(gen(2, 1).lookup(&ids, 100, None, &[]).unwrap(), vec![7, 8]);
        // No earlier occurrence: no candidates.
        assert!(gen(3, 2)
            .lookup(&[1, 2, 3], 100, None, &[])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn candidates_respect_length_eos_and_processors() {
        let ids = [5, 6, 7, 2, 8, 5, 6];
        // Stops before the EOS id 2.
        assert_eq!(gen(4, 2).lookup(&ids, 100, None, &[2]).unwrap(), vec![7]);
        // Bounded by max_length as an index, and nothing when one slot is left.
        assert_eq!(gen(4, 2).lookup(&ids, 4, None, &[]).unwrap(), vec![7, 2]);
        assert!(gen(4, 2).lookup(&ids, 8, None, &[]).unwrap().is_empty());
        // A suppressed token cuts the candidates; none allowed moves on to a shorter n-gram.
        let mut list = LogitsProcessorList::default();
        list.push(SuppressTokensLogitsProcessor::new(vec![2]));
        assert_eq!(
            gen(4, 2).lookup(&ids, 100, Some(&list), &[]).unwrap(),
            vec![7]
        );
        let mut list = LogitsProcessorList::default();
        list.push(SuppressTokensLogitsProcessor::new(vec![7]));
        // (5, 6) -> 7 is banned; unigram 6 -> 7 too; nothing else matches.
        assert!(gen(4, 2)
            .lookup(&ids, 100, Some(&list), &[])
            .unwrap()
            .is_empty());
        assert!(PromptLookupCandidateGenerator::new(0, 2, 20).is_err());
    }
}
