//! HF `AssistedCandidateGeneratorDifferentTokenizers` (`candidate_generator.py`): universal assisted
//! decoding, a draft whose tokenizer differs from the target's. Each round the new part of the
//! target's sequence is decoded to text and re-encoded with the draft's tokenizer (the last
//! `target_lookbehind` target tokens, aligned with the draft's previous input by the longest common
//! run of tokens); the draft's tokens are decoded and re-encoded into target tokens the same way
//! (the last `assistant_lookbehind` draft tokens). The candidates are then verified as any other.
//!
//! Deliberate differences from transformers:
//! - with `do_sample`, transformers switches to `UniversalSpeculativeDecodingGenerator` (a vocabulary
//!   map and speculative sampling over the shared tokens); lmgen keeps this generator, whose
//!   candidates carry no distribution, so the target's own draws decide, which keeps the target's
//!   distribution exactly;
//! - the draft runs without the call's logits processors (their token ids are the target's) and
//!   stops at its own tokenizer's EOS; transformers passes the target's processors and EOS ids to
//!   the draft unchanged. Both only change the candidates, never the output.

use super::confidence::ConfidenceThreshold;
use super::draft_model::{DraftRun, Drafter};
use super::{CandidateGenerator, Candidates, DraftContext, DraftLength, RowLayout};
use crate::error::Result;
use crate::models::CausalLM;
use crate::tokenizer::{clean_up_tokenization, Tokenizer};
use crate::TokenId;

/// A draft with its own tokenizer.
#[doc(alias = "AssistedCandidateGeneratorDifferentTokenizers")]
pub struct UniversalCandidateGenerator<'m> {
    drafter: Drafter<'m>,
    target_tokenizer: &'m Tokenizer,
    assistant_tokenizer: &'m Tokenizer,
    length: DraftLength,
    confidence: ConfidenceThreshold,
    assistant_eos: Vec<TokenId>,
    target_lookbehind: usize,
    assistant_lookbehind: usize,
    /// Target length when the draft's input was last rebuilt (HF `prev_target_ids_len`).
    prev_target_ids_len: Option<usize>,
    /// The draft's last sequence, its input and drafted tokens (HF `prev_assistant_ids`).
    prev_assistant_ids: Option<Vec<TokenId>>,
}

impl std::fmt::Debug for UniversalCandidateGenerator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UniversalCandidateGenerator")
            .field("length", &self.length)
            .field("target_lookbehind", &self.target_lookbehind)
            .field("assistant_lookbehind", &self.assistant_lookbehind)
            .finish()
    }
}

/// The settings of universal assisted decoding (`GenerationConfig` fields).
#[derive(Debug, Clone, Copy)]
pub struct UniversalOptions {
    pub length: DraftLength,
    pub assistant_confidence_threshold: f32,
    pub target_lookbehind: usize,
    pub assistant_lookbehind: usize,
}

impl<'m> UniversalCandidateGenerator<'m> {
    pub fn new(
        assistant: &'m dyn CausalLM,
        target_tokenizer: &'m Tokenizer,
        assistant_tokenizer: &'m Tokenizer,
        options: UniversalOptions,
    ) -> Self {
        Self {
            drafter: Drafter::own(assistant, None),
            target_tokenizer,
            assistant_tokenizer,
            length: options.length,
            confidence: ConfidenceThreshold::new(options.assistant_confidence_threshold, false),
            assistant_eos: assistant_tokenizer.eos_token_id().into_iter().collect(),
            target_lookbehind: options.target_lookbehind,
            assistant_lookbehind: options.assistant_lookbehind,
            prev_target_ids_len: None,
            prev_assistant_ids: None,
        }
    }

    /// HF `convert_source_tokens_to_target_tokens`: decode (special tokens skipped, tokenization
    /// spaces cleaned up), encode with special tokens.
    fn convert(ids: &[TokenId], from: &Tokenizer, to: &Tokenizer) -> Result<Vec<TokenId>> {
        let text = clean_up_tokenization(&from.decode(ids, true)?);
        to.encode(&text)
    }

    /// HF `_prepare_assistant_input_ids`: the target's sequence in the draft's tokens.
    fn assistant_input_ids(&mut self, input_ids: &[TokenId]) -> Result<Vec<TokenId>> {
        let (target, assistant) = (self.target_tokenizer, self.assistant_tokenizer);
        let prev = match (&self.prev_assistant_ids, self.prev_target_ids_len) {
            (Some(prev), Some(prev_len)) if prev_len > self.target_lookbehind => {
                Some((prev.clone(), prev_len))
            }
            _ => None,
        };
        let Some((prev, prev_len)) = prev else {
            self.prev_target_ids_len = Some(input_ids.len());
            return Self::convert(input_ids, target, assistant);
        };
        let window = &input_ids[prev_len - self.target_lookbehind..];
        let new_ids = Self::convert(window, target, assistant)?;
        let prompt_use = &prev[prev.len().saturating_sub(new_ids.len())..];
        let mut ids = prev.clone();
        match tokens_diag(prompt_use, &new_ids) {
            Some(diag) => {
                let (discrepancy_len, fix) = (diag.discrepancy_len, &diag.discrepancy);
                if discrepancy_len > 0 && !fix.is_empty() {
                    if discrepancy_len > fix.len() {
                        ids.truncate(ids.len() - (discrepancy_len - fix.len()));
                    }
                    let at = ids.len() - fix.len();
                    ids[at..].copy_from_slice(fix);
                }
                ids.extend_from_slice(&diag.new_tokens);
            }
            None => ids.extend_from_slice(&new_ids),
        }
        Ok(ids)
    }

    /// HF `_process_assistant_outputs`: the draft's sequence back in target tokens.
    fn target_ids(
        &self,
        input_ids: &[TokenId],
        assistant_input_len: usize,
        assistant_sequence: &[TokenId],
        max_length: usize,
    ) -> Result<Vec<TokenId>> {
        // Python slicing: a negative start counts from the end.
        let start = assistant_input_len as isize - self.assistant_lookbehind as isize;
        let start = if start < 0 {
            assistant_sequence
                .len()
                .saturating_sub(start.unsigned_abs())
        } else {
            (start as usize).min(assistant_sequence.len())
        };
        let window = Self::convert(
            &assistant_sequence[start..],
            self.assistant_tokenizer,
            self.target_tokenizer,
        )?;
        let prompt_use = &input_ids[input_ids.len().saturating_sub(window.len())..];
        let mut ids = input_ids.to_vec();
        match tokens_diag(prompt_use, &window) {
            Some(diag) => ids.extend_from_slice(&diag.new_tokens),
            None => ids.extend_from_slice(&window),
        }
        ids.truncate(max_length);
        Ok(ids)
    }
}

impl CandidateGenerator for UniversalCandidateGenerator<'_> {
    fn get_candidates(&mut self, ctx: DraftContext<'_, '_>) -> Result<Candidates> {
        let max_new = self.length.num_assistant_tokens;
        if max_new == 0 {
            return Ok(Candidates::default());
        }
        let assistant_ids = self.assistant_input_ids(ctx.sequence)?;
        if assistant_ids.is_empty() {
            return Ok(Candidates::default());
        }
        let layout = RowLayout::new(None, assistant_ids.len());
        let draft = self.drafter.run(DraftRun {
            ids: &assistant_ids,
            layout: &layout,
            max_new,
            processors: None,
            sampler: ctx.sampler,
            eos: &self.assistant_eos,
            confidence: &self.confidence,
            target_cache: None,
        })?;
        let mut sequence = assistant_ids.clone();
        sequence.extend_from_slice(&draft.tokens);
        let new_target =
            self.target_ids(ctx.sequence, assistant_ids.len(), &sequence, ctx.max_length)?;
        self.prev_target_ids_len = Some(ctx.sequence.len());
        self.prev_assistant_ids = Some(sequence);
        let tokens = new_target
            .get(ctx.sequence.len()..)
            .map(<[TokenId]>::to_vec)
            .unwrap_or_default();
        Ok(Candidates {
            tokens,
            scores: None,
        })
    }

    fn update_candidate_strategy(
        &mut self,
        _sequence: &[TokenId],
        num_candidates: usize,
        num_matches: usize,
    ) {
        self.length.update(num_candidates, num_matches);
    }

    fn num_candidate_tokens(&self) -> usize {
        self.length.num_assistant_tokens
    }
}

/// HF `_get_tokens_diag`'s result.
#[derive(Debug, PartialEq, Eq)]
struct Diag {
    /// How many trailing tokens of `prompt` the new encoding replaces.
    discrepancy_len: usize,
    /// What replaces them.
    discrepancy: Vec<TokenId>,
    /// The tokens after the aligned part.
    new_tokens: Vec<TokenId>,
}

/// HF `_get_tokens_diag`: aligns `prompt` with `prompt_plus_new` by the longest run of equal tokens
/// (first such run in row-major order of `prompt_plus_new[i] == prompt[j]`); `None` when they share
/// no token.
fn tokens_diag(prompt: &[TokenId], prompt_plus_new: &[TokenId]) -> Option<Diag> {
    let (q, p) = (prompt_plus_new.len(), prompt.len());
    let mut visited = vec![false; q * p];
    let mut best: Option<(usize, usize, usize)> = None; // (i, j, len)
    for i in 0..q {
        for j in 0..p {
            if prompt_plus_new[i] != prompt[j] || visited[i * p + j] {
                continue;
            }
            let mut len = 0;
            while i + len < q && j + len < p && prompt_plus_new[i + len] == prompt[j + len] {
                visited[(i + len) * p + j + len] = true;
                len += 1;
            }
            if best.is_none_or(|(_, _, l)| len > l) {
                best = Some((i, j, len));
            }
        }
    }
    let (i, j, len) = best?;
    let new_start = i + len;
    let discrepancy_len = p - (j + len);
    let split = (new_start + discrepancy_len).min(q);
    Some(Diag {
        discrepancy_len,
        discrepancy: prompt_plus_new[new_start..split].to_vec(),
        new_tokens: prompt_plus_new[split..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diag_finds_the_longest_common_run() {
        // prompt ends [5, 6, 7]; the re-encoding shares [5, 6] then adds [9, 10]:
        // the prompt's last token 7 is a discrepancy replaced by 9.
        let d = tokens_diag(&[4, 5, 6, 7], &[5, 6, 9, 10]).unwrap();
        assert_eq!(
            d,
            Diag {
                discrepancy_len: 1,
                discrepancy: vec![9],
                new_tokens: vec![10],
            }
        );
        // Fully aligned suffix: everything after it is new.
        let d = tokens_diag(&[1, 2, 3], &[2, 3, 8, 9]).unwrap();
        assert_eq!((d.discrepancy_len, d.new_tokens), (0, vec![8, 9]));
        assert!(tokens_diag(&[1, 2], &[3, 4]).is_none());
    }
}
