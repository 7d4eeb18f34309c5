//! A choice's text as tokens arrive: decoded as a whole each time (so merges across tokens and
//! multi-byte characters come out right), cut at the first stop sequence (which is not returned),
//! and, while streaming, holding back what could still become a stop sequence or an incomplete
//! character.

use lmgen::{TokenId, Tokenizer};

/// The text state of one choice.
#[derive(Debug, Clone, Default)]
pub struct ChoiceText {
    ids: Vec<TokenId>,
    stops: Vec<String>,
    /// Bytes of the text already handed out.
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

    /// Adds tokens; returns the new text that can be sent now (everything left when `last`).
    pub fn push(&mut self, tokenizer: &Tokenizer, tokens: &[TokenId], last: bool) -> String {
        if self.stopped {
            return String::new();
        }
        self.ids.extend_from_slice(tokens);
        let mut text = tokenizer.decode(&self.ids, true).unwrap_or_default();
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
            // The start of a stop sequence may be at the end: keep it until it is decided.
            let hold = self
                .stops
                .iter()
                .map(|s| {
                    (1..s.len())
                        .rev()
                        .filter(|&k| s.is_char_boundary(k))
                        .find(|&k| text[..end].ends_with(&s[..k]))
                        .unwrap_or(0)
                })
                .max()
                .unwrap_or(0);
            end -= hold;
        }
        let out = text.get(self.sent..end).unwrap_or_default().to_string();
        self.sent = self.sent.max(end);
        out
    }
}
