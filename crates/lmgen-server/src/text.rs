//! A choice's text as tokens arrive, cut at the first stop sequence (which is not returned).
//!
//! Streamed pieces must add up to `decode(all tokens)`, but the text of the last tokens can still
//! change when more come, so a piece only ever holds text that no later token can change:
//! - a run of byte-fallback tokens (`<0x..>`, Llama/Mistral/Gemma tokenizers) decodes as one
//!   group: valid UTF-8 becomes the characters, anything else one U+FFFD per byte; the run waits
//!   until a non-byte token (or the end) closes it;
//! - byte-level tokenizers (GPT-2, Qwen2, Llama 3) show a character still missing bytes as a
//!   trailing U+FFFD: it waits for its other bytes;
//! - `clean_up_tokenization_spaces` rewrites `" ."`, `" 's"`, ... : a tail that may become one
//!   of those waits;
//! - a tail that may become a stop sequence waits until it is decided.

use std::sync::Arc;

use lmgen::{TokenId, Tokenizer};

/// The served tokenizer, with what streaming needs to know about its vocabulary.
#[derive(Debug)]
pub struct Detokenizer {
    tokenizer: Arc<Tokenizer>,
    /// Per token id: a byte-fallback token (`<0xHH>`).
    byte_tokens: Vec<bool>,
}

/// The rewrites of transformers' `clean_up_tokenization` (all start with a space).
const CLEANUP_PATTERNS: [&str; 10] = [
    " .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're",
];

impl Detokenizer {
    /// Scans the vocabulary of `tokenizer` for byte-fallback tokens.
    pub fn new(tokenizer: Arc<Tokenizer>) -> Self {
        let vocab = tokenizer.inner().get_vocab(true);
        let size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        let mut byte_tokens = vec![false; size];
        for (token, id) in vocab {
            if is_byte_token(&token) {
                byte_tokens[id as usize] = true;
            }
        }
        Self {
            tokenizer,
            byte_tokens,
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn is_byte(&self, id: TokenId) -> bool {
        self.byte_tokens.get(id as usize).copied().unwrap_or(false)
    }

    /// How many leading tokens of `ids` have text that later tokens cannot change: all but a
    /// trailing run of byte-fallback tokens.
    fn settled(&self, ids: &[TokenId]) -> usize {
        ids.iter()
            .rposition(|&id| !self.is_byte(id))
            .map_or(0, |i| i + 1)
    }

    fn decode(&self, ids: &[TokenId]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot decode generated tokens");
            String::new()
        })
    }
}

/// `<0x00>` ... `<0xFF>` (what the `ByteFallback` decoder turns into a byte).
fn is_byte_token(token: &str) -> bool {
    token.len() == 6
        && token.starts_with("<0x")
        && token.ends_with('>')
        && u8::from_str_radix(&token[3..5], 16).is_ok()
}

/// The longest proper prefix of `pattern` that `text` ends with (0: none).
fn pending_prefix(text: &str, pattern: &str) -> usize {
    (1..pattern.len())
        .rev()
        .filter(|&k| pattern.is_char_boundary(k))
        .find(|&k| text.ends_with(&pattern[..k]))
        .unwrap_or(0)
}

/// The text state of one choice.
#[derive(Debug, Clone, Default)]
pub struct ChoiceText {
    ids: Vec<TokenId>,
    stops: Vec<String>,
    /// The settled text so far (cut at a stop sequence once one is found).
    text: String,
    /// Bytes of `text` already handed out.
    sent: usize,
    /// A stop sequence was found: the text ends before it.
    pub stopped: bool,
}

impl ChoiceText {
    /// Empty, cutting at `stops`.
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            ..Self::default()
        }
    }

    /// The whole text (after the `last` push: `decode(tokens)`, cut at the first stop sequence).
    pub fn full(&self) -> &str {
        &self.text
    }

    /// Adds tokens; returns the new text that can be sent now (everything left when `last`).
    pub fn push(&mut self, detok: &Detokenizer, tokens: &[TokenId], last: bool) -> String {
        if self.stopped {
            return String::new();
        }
        self.ids.extend_from_slice(tokens);
        let settled = if last {
            self.ids.len()
        } else {
            detok.settled(&self.ids)
        };
        let mut text = detok.decode(&self.ids[..settled]);
        if let Some(cut) = self
            .stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(cut);
            self.stopped = true;
        }
        let mut end = text.len();
        if !last && !self.stopped {
            // A character still being built decodes to U+FFFD: wait for its other bytes.
            if text.ends_with('\u{FFFD}') {
                end -= '\u{FFFD}'.len_utf8();
            }
            let held = &text[..end];
            let mut hold = 0;
            if detok.tokenizer.clean_up_tokenization_spaces {
                hold = CLEANUP_PATTERNS
                    .iter()
                    .map(|p| pending_prefix(held, p))
                    .max()
                    .unwrap_or(0);
            }
            // The start of a stop sequence may be at the end: keep it until it is decided.
            for s in &self.stops {
                hold = hold.max(pending_prefix(held, s));
            }
            end -= hold;
        }
        let out =
            if !(text.is_char_boundary(self.sent) && text[..self.sent] == self.text[..self.sent]) {
                // Cannot happen with the rules above; say so rather than stream a wrong text.
                tracing::error!(
                    sent = %&self.text[..self.sent],
                    now = %text,
                    "streamed text is not a prefix of the decoded text"
                );
                String::new()
            } else {
                text.get(self.sent..end).unwrap_or_default().to_string()
            };
        self.sent = self.sent.max(end);
        self.text = text;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokens_and_prefixes() {
        assert!(is_byte_token("<0x0A>") && is_byte_token("<0xff>"));
        assert!(!is_byte_token("<0xZZ>") && !is_byte_token("<0x0A") && !is_byte_token("▁a"));
        assert_eq!(pending_prefix("ab n'", " n't"), 3);
        assert_eq!(pending_prefix("ab", " n't"), 0);
        assert_eq!(pending_prefix("x STO", "STOP"), 3);
        assert_eq!(pending_prefix("STOP", "STOP"), 0); // whole: found by the search, not held
    }
}
