//! Anthropic's `thinking.budget_tokens`: once a choice has generated that many tokens inside its
//! reasoning (counted as `reasoning_tokens` counts them, from the output's first token, markers
//! included), the closing marker is forced, token by token, so that the answer follows.
//!
//! A logits processor on the engine request, like a grammar: it reads each row's generated
//! tokens (so it holds under any decoding mode) and, while that row is past its budget and still
//! inside the reasoning, allows only the next token of the closing marker (after the part of it
//! the output already ends with). Below the budget it costs nothing; past it, it decodes the row's
//! output to find where the text stands, once: an output found past its reasoning stays so, and
//! is remembered (the only state, a cache) so that the answer's tokens cost a prefix comparison. Claude's budget is a target the
//! model may overrun a little; here it is exact: the reasoning is the first `budget_tokens`
//! tokens and then the marker's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use lmgen::generation::logits::{LogitsProcessor, Scores};
use lmgen::{TokenId, Tokenizer};

use super::think::{self, Section};
use super::OutputFormat;

/// Forces the end of the reasoning after `budget` tokens.
pub struct ThinkingBudgetLogitsProcessor {
    budget: usize,
    prompt_len: usize,
    markers: think::Markers,
    in_reasoning: bool,
    tokenizer: Arc<Tokenizer>,
    /// Special tokens the output's text leaves out (as the server's parse of it).
    dropped: HashSet<TokenId>,
    /// The last output seen past its reasoning (its extensions are too).
    done: Mutex<Vec<TokenId>>,
}

impl ThinkingBudgetLogitsProcessor {
    /// The processor for an output read by `format` (`None` if it reads no thinking markers), a
    /// prompt of `prompt_len` tokens, and the special tokens the text drops.
    pub fn new(
        format: &OutputFormat,
        budget: usize,
        prompt_len: usize,
        tokenizer: Arc<Tokenizer>,
        dropped: HashSet<TokenId>,
    ) -> Option<Self> {
        (format.think && !format.harmony).then(|| Self {
            budget,
            prompt_len,
            markers: format.think_markers,
            in_reasoning: format.in_reasoning,
            tokenizer,
            dropped,
            done: Mutex::new(Vec::new()),
        })
    }

    /// The token to force after `generated` (`None`: the model is free).
    fn forced(&self, generated: &[TokenId]) -> lmgen::Result<Option<TokenId>> {
        if generated.len() < self.budget {
            return Ok(None);
        }
        let done = |d: &Vec<TokenId>| !d.is_empty() && generated.starts_with(d);
        if self.done.lock().is_ok_and(|d| done(&d)) {
            return Ok(None);
        }
        let kept: Vec<TokenId> = generated
            .iter()
            .copied()
            .filter(|t| !self.dropped.contains(t))
            .collect();
        let text = self.tokenizer.decode(&kept, false)?;
        match think::section(&text, self.in_reasoning, self.markers) {
            Section::Reasoning => {}
            Section::Pending => return Ok(None),
            Section::Answer | Section::NoReasoning => {
                if let Ok(mut d) = self.done.lock() {
                    *d = generated.to_vec();
                }
                return Ok(None);
            }
        }
        // The marker's tokens, as the tokenizer encodes it alone or without the first tokens
        // (a sentencepiece encoding starts with a space the text must not get): the first that
        // appends exactly the marker to the text, continued where the output already has a start
        // of it.
        let close = self.markers.close();
        let ids = self.tokenizer.encode_with(close, false)?;
        for k in 0..ids.len() {
            let spelling = &ids[k..];
            let (base, next) = continued(&kept, spelling);
            let before = self.tokenizer.decode(base, false)?;
            let after = self.tokenizer.decode(&[base, spelling].concat(), false)?;
            if after.strip_prefix(before.as_str()) == Some(close) {
                return Ok(Some(spelling[next]));
            }
        }
        Ok(ids.get(continued(&kept, &ids).1).copied())
    }
}

/// `generated` without the start of `spelling` it ends with, and the index in `spelling` of
/// the token to write next.
fn continued<'a>(generated: &'a [TokenId], spelling: &[TokenId]) -> (&'a [TokenId], usize) {
    let j = (0..spelling.len())
        .rev()
        .find(|&j| generated.ends_with(&spelling[..j]))
        .unwrap_or(0);
    (&generated[..generated.len() - j], j)
}

impl LogitsProcessor for ThinkingBudgetLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> lmgen::Result<()> {
        for (i, ids) in input_ids.iter().enumerate() {
            let generated = ids.get(self.prompt_len..).unwrap_or_default();
            if let Some(t) = self.forced(generated)? {
                let row = scores.row_mut(i);
                for (id, s) in row.iter_mut().enumerate() {
                    if id != t as usize {
                        *s = f32::NEG_INFINITY;
                    }
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
    fn a_spelling_continues_where_the_output_has_its_start() {
        let spelling = [7, 8, 9];
        assert_eq!(continued(&[1, 2], &spelling), (&[1, 2][..], 0));
        assert_eq!(continued(&[1, 7], &spelling), (&[1][..], 1));
        assert_eq!(continued(&[1, 7, 8], &spelling), (&[1][..], 2));
        // A whole spelling is not a start: it begins again.
        assert_eq!(continued(&[7, 8, 9], &spelling), (&[7, 8, 9][..], 0));
        assert_eq!(continued(&[], &spelling), (&[][..], 0));
    }
}
