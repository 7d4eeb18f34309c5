//! Generated tokens to text as they come (tokenizers' `DecodeStream`, vLLM's incremental
//! detokenizer): each piece is text that no later token can change, so the pieces add up to
//! `decode(all tokens)` exactly and a piece never needs taking back.
//!
//! What a later token can still change, and so waits:
//! - a run of byte-fallback tokens (`<0xHH>`, Llama / Mistral / Gemma vocabularies) decodes as one
//!   group: valid UTF-8 becomes characters, anything else one U+FFFD per byte, so a run waits
//!   until a token that is neither a byte token nor a special token that decoding drops closes
//!   it (or the end);
//! - byte-level vocabularies (GPT-2, Qwen2, Llama 3) decode a character still missing bytes to a
//!   trailing U+FFFD: it waits for its other bytes;
//! - with `clean_up_tokenization_spaces`, a tail that a rewrite (`" ."`, `" n't"`, ...) may
//!   still reach waits: everything from a space among the last three characters.
//!
//! The settled tokens go through tokenizers' `DecodeStream` step (`step_decode_stream`), which
//! decodes only a window of recent tokens, so a long sequence costs no more per token than a
//! short one. It gives `decode(all)` exactly once byte-fallback runs reach it whole: a run split
//! between two steps is what makes `DecodeStream` alone fail (`InvalidPrefix`) or differ on
//! Llama-style vocabularies. Clean-up, which `DecodeStream` does not apply, runs on the stream's
//! text up to a point no rewrite reaches across ([`clean_up_cut`]).
//!
//! transformers' `TextStreamer` ([`crate::generation::streamer::TextStreamer`]) does not use
//! this: it decodes its token cache whole at every `put` and passes on text by character position,
//! including text a later token rewrites (a byte-fallback `<0x20>` passed on as a space turns into
//! U+FFFD when the next byte token makes the run invalid UTF-8), and it restarts decoding after a
//! newline (a `Strip` decoder then drops a space that `decode(all)` keeps). lmgen's `TextStreamer`
//! must give transformers' chunks exactly, so it keeps its own decoding; the
//! `text_streamer_chunks_are_not_stable_text` test shows both differences.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::tokenizer::{clean_up_tokenization, Tokenizer};
use crate::TokenId;

/// A tokenizer with what incremental decoding needs to know about its vocabulary, computed once
/// and shared by every sequence's [`IncrementalText`].
#[doc(alias = "DecodeStream")]
#[derive(Debug)]
pub struct Detokenizer {
    tokenizer: Arc<Tokenizer>,
    skip_special_tokens: bool,
    /// Per token id: the token leaves a byte-fallback run open (a `<0xHH>` token, or a special
    /// token that decoding drops). Empty when the vocabulary has no byte tokens.
    keeps_run_open: Vec<bool>,
}

impl Detokenizer {
    /// Decodes as `tokenizer.decode(ids, skip_special_tokens)` does.
    pub fn new(tokenizer: Arc<Tokenizer>, skip_special_tokens: bool) -> Self {
        let vocab = tokenizer.inner().get_vocab(true);
        let mut keeps_run_open = Vec::new();
        if vocab.keys().any(|t| is_byte_token(t)) {
            let size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
            keeps_run_open = vec![false; size];
            for (token, &id) in &vocab {
                keeps_run_open[id as usize] = is_byte_token(token);
            }
            if skip_special_tokens {
                for (&id, token) in tokenizer.inner().get_added_tokens_decoder().iter() {
                    if token.special {
                        if let Some(open) = keeps_run_open.get_mut(id as usize) {
                            *open = true;
                        }
                    }
                }
            }
        }
        Self {
            tokenizer,
            skip_special_tokens,
            keeps_run_open,
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Whether special tokens are left out of the text.
    pub fn skip_special_tokens(&self) -> bool {
        self.skip_special_tokens
    }

    /// How many leading tokens of `ids` have text that later tokens cannot change: all but a
    /// trailing byte-fallback run (with the skipped special tokens inside or after it).
    fn settled(&self, ids: &[TokenId]) -> usize {
        let open = |id: &TokenId| self.keeps_run_open.get(*id as usize) == Some(&true);
        ids.iter().rposition(|id| !open(id)).map_or(0, |i| i + 1)
    }

    /// `decode` without clean-up.
    fn decode_raw(&self, ids: &[TokenId]) -> Result<String> {
        self.tokenizer.decode_raw(ids, self.skip_special_tokens)
    }
}

/// `<0x00>` ... `<0xFF>` (what the `ByteFallback` decoder turns into a byte).
pub fn is_byte_token(token: &str) -> bool {
    token.len() == 6
        && token.starts_with("<0x")
        && token.ends_with('>')
        && u8::from_str_radix(&token[3..5], 16).is_ok()
}

/// tokenizers' `DecodeStream` state, kept here so the stream needs no borrow of the tokenizer.
#[derive(Debug, Clone, Default)]
struct StreamState {
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

/// One sequence's text as its tokens come: [`push`](Self::push) them, get the new stable text.
/// Every call takes the sequence's [`Detokenizer`] (the same one each time).
#[derive(Debug, Clone, Default)]
pub struct IncrementalText {
    ids: Vec<TokenId>,
    /// Leading tokens of `ids` whose text is in `text` or in the stream's window.
    fed: usize,
    stream: StreamState,
    /// With clean-up: the stream's text before clean-up, and how much of it is in `text`.
    raw: String,
    cleaned: usize,
    /// The stable text so far.
    text: String,
    finished: bool,
}

impl IncrementalText {
    /// No tokens yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every token pushed.
    pub fn ids(&self) -> &[TokenId] {
        &self.ids
    }

    /// The stable text so far (after [`finish`](Self::finish): `decode(ids)`).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Adds `tokens`; returns the text that became stable (often empty).
    pub fn push(&mut self, detok: &Detokenizer, tokens: &[TokenId]) -> Result<&str> {
        let start = self.text.len();
        if self.finished {
            return Ok("");
        }
        self.ids.extend_from_slice(tokens);
        let settled = detok.settled(&self.ids);
        if settled > self.fed {
            let new = self.ids[self.fed..settled].to_vec();
            self.fed = settled;
            let piece = self.step(detok, new)?;
            self.add(detok, piece.as_deref().unwrap_or(""), false);
        }
        Ok(&self.text[start..])
    }

    /// The sequence is complete: returns the rest of its text (all of it is stable now).
    pub fn finish(&mut self, detok: &Detokenizer) -> Result<&str> {
        let start = self.text.len();
        if self.finished {
            return Ok("");
        }
        self.finished = true;
        let rest = self.ids[self.fed..].to_vec();
        self.fed = self.ids.len();
        let mut piece = self.step(detok, rest)?.unwrap_or_default();
        // What the stream still holds back (a trailing U+FFFD, for good now).
        let window = detok.decode_raw(&self.stream.ids)?;
        match window.strip_prefix(self.stream.prefix.as_str()) {
            Some(tail) => piece.push_str(tail),
            None => {
                return Err(Error::Tokenizer(format!(
                    "incremental decoding lost its place: {window:?} does not start with {:?}",
                    self.stream.prefix
                )))
            }
        }
        self.add(detok, &piece, true);
        Ok(&self.text[start..])
    }

    /// Appends `piece` of the stream's text: as it is, or through clean-up as far as no rewrite
    /// can reach across the cut (all of it when `last`).
    fn add(&mut self, detok: &Detokenizer, piece: &str, last: bool) {
        if !detok.tokenizer.clean_up_tokenization_spaces {
            self.text.push_str(piece);
            return;
        }
        self.raw.push_str(piece);
        let cut = match last {
            true => self.raw.len(),
            false => clean_up_cut(&self.raw),
        };
        if cut > self.cleaned {
            self.text
                .push_str(&clean_up_tokenization(&self.raw[self.cleaned..cut]));
            self.cleaned = cut;
        }
    }

    /// One `DecodeStream` step over `ids`: the new text, if the window's text grew and does not
    /// end in U+FFFD. Decodes without clean-up ([`Self::add`] applies it).
    fn step(&mut self, detok: &Detokenizer, ids: Vec<u32>) -> Result<Option<String>> {
        let s = &mut self.stream;
        if detok.tokenizer.is_sentencepiece() {
            return sentencepiece_step(detok, ids, s);
        }
        tokenizers::tokenizer::step_decode_stream(
            detok.tokenizer.inner(),
            ids,
            detok.skip_special_tokens,
            &mut s.ids,
            &mut s.prefix,
            &mut s.prefix_index,
        )
        .map_err(|e| Error::Tokenizer(format!("incremental decoding: {e}")))
    }
}

/// [`IncrementalText::step`] for a tokenizer that decodes with sentencepiece (Marian), which has
/// no `DecodeStream`: the stream keeps every id and its whole text, and a step decodes them all
/// again and answers what the text gained. That decoding only appends as tokens come (each piece
/// decodes on its own but for the first one's leading `▁`, and the stripped ends can only grow
/// back as inner text), so the old text is always a prefix of the new; a text that is not is an
/// error, never a piece taken back. Each step costs the whole sequence's decoding, which Marian's
/// short outputs (512 tokens at most) afford.
fn sentencepiece_step(
    detok: &Detokenizer,
    ids: Vec<u32>,
    s: &mut StreamState,
) -> Result<Option<String>> {
    s.ids.extend(ids);
    let text = detok.decode_raw(&s.ids)?;
    let Some(new) = text.strip_prefix(s.prefix.as_str()) else {
        return Err(Error::Tokenizer(format!(
            "incremental decoding: {text:?} does not start with the text so far {:?}",
            s.prefix
        )));
    };
    let new = new.to_string();
    s.prefix = text;
    Ok((!new.is_empty()).then_some(new))
}

/// Where clean-up may cut `raw`: the largest byte offset with no space among the three
/// characters before it. Every rewrite of `clean_up_tokenization` starts with a space and is at
/// most four characters long, and it only removes spaces, so no rewrite (nor one that an earlier
/// rewrite brings together, as `" ' "` then `" 'm"` in `"  ' m"`) reaches across such a cut:
/// cleaning the two sides apart gives the same text as cleaning them together.
fn clean_up_cut(raw: &str) -> usize {
    let mut cut = raw.len();
    loop {
        let before = raw[..cut].char_indices().rev().take(3);
        match before.filter(|&(_, c)| c == ' ').last() {
            Some((space, _)) => cut = space,
            None => return cut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const MODELS: [&str; 6] = ["gpt2", "llama", "llama3", "qwen2", "mistral", "gemma2"];

    fn tokenizer(model: &str) -> Tokenizer {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/golden/models")
            .join(model);
        Tokenizer::from_dir(&dir).unwrap()
    }

    /// Pushes `ids` in pieces of the given sizes, then finishes: the pieces of text.
    fn stream(d: &Detokenizer, ids: &[TokenId], sizes: &mut dyn FnMut() -> usize) -> Vec<String> {
        let mut text = IncrementalText::new();
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < ids.len() {
            let n = sizes().clamp(1, ids.len() - at);
            pieces.push(text.push(d, &ids[at..at + n]).unwrap().to_string());
            at += n;
        }
        pieces.push(text.finish(d).unwrap().to_string());
        assert_eq!(text.text(), pieces.concat());
        pieces
    }

    #[test]
    fn random_ids_stream_to_their_whole_decode() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for model in MODELS {
            let tok = Arc::new(tokenizer(model));
            let size = tok.vocab_size() as u32;
            let bytes: Vec<u32> = (0..size)
                .filter(|&id| {
                    tok.inner()
                        .id_to_token(id)
                        .is_some_and(|t| is_byte_token(&t))
                })
                .collect();
            for skip in [true, false] {
                let d = Detokenizer::new(tok.clone(), skip);
                for _ in 0..150 {
                    // Byte tokens often, to make runs (valid UTF-8 or not).
                    let len = rng.random_range(1..30);
                    let ids: Vec<u32> = (0..len)
                        .map(|_| match !bytes.is_empty() && rng.random_bool(0.4) {
                            true => bytes[rng.random_range(0..bytes.len())],
                            false => rng.random_range(0..size),
                        })
                        .collect();
                    let whole = tok.decode(&ids, skip).unwrap();
                    let pieces = stream(&d, &ids, &mut || 1);
                    assert_eq!(pieces.concat(), whole, "{model} {ids:?} skip={skip}");
                    let pieces = stream(&d, &ids, &mut || rng.random_range(1..5));
                    assert_eq!(pieces.concat(), whole, "{model} {ids:?} skip={skip}");
                }
            }
        }
    }

    #[test]
    fn clean_up_streams_to_the_whole_decode() {
        // Texts dense in clean-up patterns, chains included (`"  ' m"`: `" ' "` then `" 'm"`).
        let alphabet = [
            " ", "'", ".", "n", "t", "m", "s", "v", "e", "r", ",", "?", "a",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for model in MODELS {
            let mut tok = tokenizer(model);
            tok.clean_up_tokenization_spaces = true;
            let tok = Arc::new(tok);
            let d = Detokenizer::new(tok.clone(), true);
            for _ in 0..300 {
                let len = rng.random_range(1..30);
                let text: String = (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect();
                let ids = tok.encode_with(&text, false).unwrap();
                let whole = tok.decode(&ids, true).unwrap();
                assert_eq!(
                    stream(&d, &ids, &mut || 1).concat(),
                    whole,
                    "{model} {text:?}"
                );
            }
        }
        assert_eq!(clean_up_cut("a b c"), 1);
        assert_eq!(clean_up_cut("do n't"), 6);
        assert_eq!(clean_up_cut("x  ' m"), 1);
        assert_eq!(clean_up_cut("Hello world"), 11);
        assert_eq!(clean_up_cut("  "), 0);
    }

    #[test]
    fn texts_stream_without_split_characters() {
        for model in MODELS {
            let tok = Arc::new(tokenizer(model));
            let d = Detokenizer::new(tok.clone(), true);
            let text = "a € and 日本語, naïve 🦀 text.\nDone";
            let ids = tok.encode_with(text, false).unwrap();
            let pieces = stream(&d, &ids, &mut || 1);
            assert_eq!(pieces.concat(), tok.decode(&ids, true).unwrap(), "{model}");
            assert!(
                pieces
                    .iter()
                    .all(|p| !p.contains(char::REPLACEMENT_CHARACTER)),
                "{model}: {pieces:?}"
            );
        }
    }

    #[test]
    fn a_byte_run_waits_until_it_is_closed() {
        let tok = Arc::new(tokenizer("llama"));
        let d = Detokenizer::new(tok.clone(), true);
        let id = |t: &str| tok.token_to_id(t).unwrap();
        let mut text = IncrementalText::new();
        assert_eq!(text.push(&d, &[id("▁a")]).unwrap(), "a");
        // `<0x20>` alone is a space, but with `<0xE2>` after it the run is invalid: two U+FFFD.
        assert_eq!(text.push(&d, &[id("<0x20>")]).unwrap(), "");
        assert_eq!(text.push(&d, &[id("<0xE2>")]).unwrap(), "");
        // A skipped special token does not close the run: the next bytes join it.
        assert_eq!(text.push(&d, &[id("</s>")]).unwrap(), "");
        assert_eq!(text.push(&d, &[id("<0x82>"), id("<0xAC>")]).unwrap(), "");
        assert_eq!(text.push(&d, &[id("b")]).unwrap(), " €b");
        assert_eq!(text.finish(&d).unwrap(), "");
    }

    #[test]
    fn clean_up_rewrites_are_waited_for() {
        let mut tok = tokenizer("gpt2");
        tok.clean_up_tokenization_spaces = true;
        let tok = Arc::new(tok);
        let d = Detokenizer::new(tok.clone(), true);
        let ids = tok
            .encode_with("Hello , world . I do n't know ' s", false)
            .unwrap();
        let whole = tok.decode(&ids, true).unwrap();
        assert_eq!(whole, "Hello, world. I don't know's");
        let pieces = stream(&d, &ids, &mut || 1);
        assert_eq!(pieces.concat(), whole, "{pieces:?}");
    }

    /// transformers' `TextStreamer` passes on text that later tokens change (and restarts
    /// decoding after a newline); the stable text never does. Why `TextStreamer` keeps its own
    /// decoding (see the module docs).
    #[test]
    fn text_streamer_chunks_are_not_stable_text() {
        use crate::generation::streamer::{TextStreamer, TextStreamerOptions, TokenStreamer};
        let tok = Arc::new(tokenizer("llama"));
        let d = Detokenizer::new(tok.clone(), true);
        let options = TextStreamerOptions {
            skip_prompt: true,
            skip_special_tokens: true,
        };
        for (tokens, streamer_chunks, whole) in [
            (
                vec!["▁a", "<0x20>", "<0xE2>", "b"],
                vec!["", "a ", "", "", "�b"],
                "a��b",
            ),
            (
                vec!["▁a", "<0x0A>", "▁b"],
                vec!["", "a\n", "", "b"],
                "a\n b",
            ),
        ] {
            let ids: Vec<TokenId> = tokens.iter().map(|t| tok.token_to_id(t).unwrap()).collect();
            let mut chunks = Vec::new();
            let mut s = TextStreamer::new(tok.clone(), options, |t: &str, _| {
                chunks.push(t.to_string())
            });
            s.put(&[]).unwrap();
            for id in &ids {
                s.put(std::slice::from_ref(id)).unwrap();
            }
            s.end().unwrap();
            drop(s);
            assert_eq!(chunks, streamer_chunks);
            assert_ne!(chunks.concat(), whole);
            assert_eq!(tok.decode(&ids, true).unwrap(), whole);
            assert_eq!(stream(&d, &ids, &mut || 1).concat(), whole);
        }
    }

    #[test]
    fn byte_tokens() {
        assert!(is_byte_token("<0x0A>") && is_byte_token("<0xff>"));
        assert!(!is_byte_token("<0xZZ>") && !is_byte_token("<0x0A") && !is_byte_token("▁a"));
    }
}
