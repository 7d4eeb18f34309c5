//! The logits processor that masks every token the grammar does not allow next.
//!
//! Processors see each row's tokens, not a handle on the row, and decoding modes reorder rows
//! (beam search), fork them (several beams from one parent) and go back (assisted decoding drops
//! rejected draft tokens). So the parser states are kept by the generated tokens they have read:
//! a row's state is its parent's (the same tokens but the last) advanced by one token, or, when no
//! ancestor is kept, rebuilt from the nearest one that is. Each state is therefore exactly the
//! grammar after the row's own tokens, whatever the mode did to the rows.

use std::collections::HashMap;
use std::sync::Mutex;

use llguidance::Matcher;

use crate::error::{Error, Result};
use crate::generation::logits::{LogitsProcessor, Scores};
use crate::TokenId;

/// Masks the tokens a grammar forbids (built by [`super::StructuredOutput::processor`]).
///
/// The first call fixes the prompt's length: the tokens after it are the generated ones the
/// grammar reads. Use one processor per `generate()` call or engine request.
pub struct GrammarLogitsProcessor {
    eos_token_ids: Vec<TokenId>,
    state: Mutex<States>,
}

impl std::fmt::Debug for GrammarLogitsProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarLogitsProcessor")
            .field("eos_token_ids", &self.eos_token_ids)
            .finish()
    }
}

struct States {
    prompt_len: Option<usize>,
    /// The grammar before any generated token.
    root: Matcher,
    /// Parser states by the generated tokens they have read; `None`: the tokens left the
    /// grammar (a draft token that verification is about to reject).
    by_tokens: HashMap<Vec<TokenId>, Option<Matcher>>,
}

impl GrammarLogitsProcessor {
    pub(super) fn new(root: Matcher, eos_token_ids: Vec<TokenId>) -> Self {
        Self {
            eos_token_ids,
            state: Mutex::new(States {
                prompt_len: None,
                root,
                by_tokens: HashMap::new(),
            }),
        }
    }
}

impl GrammarLogitsProcessor {
    /// A processor for another sequence: the same compiled grammar, from its start (the
    /// grammar is compiled once per request, restarted for each of its sequences).
    pub fn restart(&self) -> Self {
        let root = match self.state.lock() {
            Ok(st) => st.root.clone(),
            Err(poisoned) => poisoned.into_inner().root.clone(),
        };
        Self::new(root, self.eos_token_ids.clone())
    }
}

impl States {
    /// The parser state after `generated`, built from the longest kept prefix. `take_parent`:
    /// the parent state is needed by no other row of this call, so it is advanced in place.
    fn state_after(&mut self, generated: &[TokenId], take_parent: bool) -> Option<&mut Matcher> {
        if !self.by_tokens.contains_key(generated) {
            let (start, base) = match generated.split_last() {
                Some((_, parent)) if take_parent && self.by_tokens.contains_key(parent) => {
                    (parent.len(), self.by_tokens.remove(parent).flatten())
                }
                _ => {
                    let start = (0..generated.len())
                        .rev()
                        .find(|&k| self.by_tokens.contains_key(&generated[..k]))
                        .unwrap_or(0);
                    let base = match self.by_tokens.get(&generated[..start]) {
                        Some(kept) => kept.clone(),
                        None => Some(self.root.clone()),
                    };
                    (start, base)
                }
            };
            let advanced = base.and_then(|mut m| {
                let ok = m.consume_tokens(&generated[start..]).is_ok() && !m.is_error();
                ok.then_some(m)
            });
            self.by_tokens.insert(generated.to_vec(), advanced);
        }
        self.by_tokens.get_mut(generated).and_then(Option::as_mut)
    }
}

impl LogitsProcessor for GrammarLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| Error::input("structured output: a previous step panicked"))?;
        let prompt_len = *st
            .prompt_len
            .get_or_insert_with(|| input_ids.iter().map(Vec::len).min().unwrap_or(0));
        let generated: Vec<&[TokenId]> = input_ids
            .iter()
            .map(|ids| &ids[prompt_len.min(ids.len())..])
            .collect();
        // How many rows of this call continue each parent, and which states are asked for.
        let mut children: HashMap<&[TokenId], usize> = HashMap::new();
        for g in &generated {
            if let Some((_, parent)) = g.split_last() {
                *children.entry(parent).or_default() += 1;
            }
        }
        let min_len = generated.iter().map(|g| g.len()).min().unwrap_or(0);
        for (row, g) in generated.iter().enumerate() {
            // A finished row (end-of-sequence, then padding) is left as it is.
            if g.iter().any(|t| self.eos_token_ids.contains(t)) {
                continue;
            }
            let take_parent = g.split_last().is_some_and(|(_, parent)| {
                children.get(parent) == Some(&1) && !generated.contains(&parent)
            });
            let Some(matcher) = st.state_after(g, take_parent) else {
                // The tokens already left the grammar: only a draft token under verification
                // can, and its row's scores are discarded.
                continue;
            };
            let mask = matcher.compute_mask_or_eos().map_err(|e| {
                Error::input(format!(
                    "structured output: the grammar failed at step {}: {e}",
                    g.len()
                ))
            })?;
            let eos_allowed = self
                .eos_token_ids
                .iter()
                .any(|&t| (t as usize) < mask.len() && mask.is_allowed(t));
            let scores_row = scores.row_mut(row);
            let mut any = false;
            for (t, s) in scores_row.iter_mut().enumerate() {
                let tok = t as TokenId;
                let allowed = if self.eos_token_ids.contains(&tok) {
                    eos_allowed
                } else {
                    t < mask.len() && mask.is_allowed(tok)
                };
                if !allowed {
                    *s = f32::NEG_INFINITY;
                } else if *s > f32::NEG_INFINITY {
                    any = true;
                }
            }
            if !any {
                return Err(Error::input(format!(
                    "structured output: no token is allowed both by the grammar and by the other \
                     processors after {} generated tokens (for example `min_new_tokens` forbids the \
                     end of a complete grammar, or `bad_words_ids` every token it allows)",
                    g.len()
                )));
            }
        }
        // States older than this call's shortest row are never asked for again except by
        // assisted decoding's rollback, which rebuilds them from a kept prefix or the root.
        st.by_tokens.retain(|k, _| k.len() >= min_len);
        Ok(())
    }
}
