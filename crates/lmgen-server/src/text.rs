//! A choice's text as tokens arrive, cut at the first stop sequence (which is not returned).
//!
//! The text comes from the library's incremental decoder ([`IncrementalText`]): pieces that no
//! later token can change, which add up to `decode(all tokens)`. On top of it the server holds
//! back a tail that may still become a stop sequence, until it is decided.

use lmgen::tokenizer::IncrementalText;
use lmgen::TokenId;

pub use lmgen::tokenizer::Detokenizer;

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
    decoded: IncrementalText,
    stops: Vec<String>,
    /// The stable text so far, cut at a stop sequence once one is found.
    text: String,
    /// Bytes of `text` already handed out.
    sent: usize,
    /// A stop sequence was found: the text ends before it.
    pub stopped: bool,
    /// Which of `stops` it was.
    matched: Option<usize>,
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

    /// The stop sequence the text was cut at, if any.
    pub fn stop_sequence(&self) -> Option<&str> {
        self.matched.map(|i| self.stops[i].as_str())
    }

    /// Adds tokens; returns the new text that can be sent now (everything left when `last`).
    pub fn push(&mut self, detok: &Detokenizer, tokens: &[TokenId], last: bool) -> String {
        if self.stopped {
            return String::new();
        }
        let before = self.text.len();
        let mut piece = self.decoded.push(detok, tokens).map(str::to_string);
        if last {
            piece = piece.and_then(|p| Ok(p + self.decoded.finish(detok)?));
        }
        match piece {
            Ok(piece) => self.text.push_str(&piece),
            Err(e) => tracing::error!(error = %e, "cannot decode generated tokens"),
        }
        // Only a match that ends in the new text is new: search from where one could start.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut from = before.saturating_sub(longest.saturating_sub(1));
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let found = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((self.text[from..].find(s.as_str())?, i)))
            .min();
        if let Some((at, i)) = found {
            self.text.truncate(from + at);
            self.stopped = true;
            self.matched = Some(i);
        }
        let mut end = self.text.len();
        if !last && !self.stopped {
            // The start of a stop sequence may be at the end: keep it until it is decided.
            end -= self
                .stops
                .iter()
                .map(|s| pending_prefix(&self.text, s))
                .max()
                .unwrap_or(0);
        }
        let out = self
            .text
            .get(self.sent..end)
            .unwrap_or_default()
            .to_string();
        self.sent = self.sent.max(end);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lmgen::tokenizer::is_byte_token;
    use lmgen::Tokenizer;

    use super::*;

    fn detok(model: &str) -> Detokenizer {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../lmgen/tests/fixtures/golden/models")
            .join(model);
        Detokenizer::new(Arc::new(Tokenizer::from_dir(&dir).unwrap()), true)
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
        assert_eq!(text.stop_sequence(), Some("ee f"));
        assert_eq!(text.full(), "one two thr");
    }

    /// Random generated ids, a stop sequence taken from their text: the pieces add up to the
    /// whole text cut before its first stop sequence.
    #[test]
    fn stops_cut_where_the_whole_text_has_them() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for model in ["gpt2", "llama"] {
            let d = detok(model);
            let size = d.tokenizer().vocab_size() as u32;
            for _ in 0..200 {
                let ids: Vec<TokenId> = (0..rng.random_range(2..25))
                    .map(|_| rng.random_range(0..size))
                    .collect();
                let whole = d.tokenizer().decode(&ids, true).unwrap();
                let chars: Vec<(usize, char)> = whole.char_indices().collect();
                if chars.len() < 2 {
                    continue;
                }
                let a = rng.random_range(0..chars.len() - 1);
                let b = (a + rng.random_range(1..4)).min(chars.len());
                let end = chars.get(b).map_or(whole.len(), |&(i, _)| i);
                let stop = whole[chars[a].0..end].to_string();
                let want = &whole[..whole.find(&stop).unwrap()];
                let (pieces, text) = stream(&d, &ids, &[&stop, "\u{1}never"]);
                assert_eq!(pieces.concat(), want, "{model} {ids:?} stop {stop:?}");
                assert_eq!(text.full(), want);
                assert!(text.stopped);
            }
        }
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
