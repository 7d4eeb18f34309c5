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

    fn detok(model: &str) -> Detokenizer {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../lmgen/tests/fixtures/golden/models")
            .join(model);
        Detokenizer::new(Arc::new(Tokenizer::from_dir(&dir).unwrap()))
    }

    /// Streams `ids` one token at a time; returns the pieces.
    fn stream(d: &Detokenizer, ids: &[TokenId], stops: &[&str]) -> (Vec<String>, ChoiceText) {
        let mut text = ChoiceText::new(stops.iter().map(|s| s.to_string()).collect());
        let pieces = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| text.push(d, &[id], i + 1 == ids.len()))
            .collect();
        (pieces, text)
    }

    #[test]
    fn byte_fallback_runs_stream_as_they_finally_decode() {
        let d = detok("llama");
        let id = |t: &str| d.tokenizer().token_to_id(t).unwrap();
        let word = d.tokenizer().encode_with("Hello", false).unwrap();
        // `<0x11>` alone is U+0011, but `<0x11><0xE2>` is invalid UTF-8 (two U+FFFD), and
        // `<0x11><0xE2><0x82><0xAC>` is U+0011 then the euro sign.
        for run in [
            vec!["<0x11>", "<0xE2>"],
            vec!["<0x11>", "<0xE2>", "<0x82>", "<0xAC>"],
        ] {
            let mut ids = word.clone();
            ids.extend(run.iter().map(|t| id(t)));
            ids.extend(&word);
            let (pieces, text) = stream(&d, &ids, &[]);
            let whole = d.tokenizer().decode(&ids, true).unwrap();
            assert_eq!(pieces.concat(), whole, "{run:?}: {pieces:?}");
            assert_eq!(text.full(), whole);
        }
    }

    #[test]
    fn byte_level_characters_are_not_split() {
        let d = detok("gpt2");
        let ids = d
            .tokenizer()
            .encode_with("a € and 日本語 b", false)
            .unwrap();
        let (pieces, _) = stream(&d, &ids, &[]);
        assert_eq!(pieces.concat(), "a € and 日本語 b");
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    }

    #[test]
    fn stop_sequences_are_cut_and_never_half_sent() {
        let d = detok("gpt2");
        let ids = d
            .tokenizer()
            .encode_with("one two three four", false)
            .unwrap();
        let (pieces, text) = stream(&d, &ids, &["ee f", "zzz"]);
        assert_eq!(pieces.concat(), "one two thr");
        assert!(text.stopped);
        assert_eq!(text.full(), "one two thr");
    }

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
