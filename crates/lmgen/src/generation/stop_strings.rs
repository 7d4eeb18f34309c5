//! HF `StopStringCriteria` (`transformers/generation/stopping_criteria.py`, `StopStringCriteria`):
//! stop once the text of the row contains one of `stop_strings`, decided on token ids alone.
//!
//! transformers precomputes, for every vocabulary token and stop string, where the token's text can
//! sit inside the stop string; at run time it walks back from the last token through those tables
//! (its "embedding vector" and `F.embedding` gather). lmgen keeps the same tables as hash maps and
//! walks the same path with plain loops: the result is the same boolean, per row.
//!
//! The rules this reproduces exactly:
//! - a match must **overlap the final token**: a stop string entirely in the past never re-triggers;
//! - it may straddle several tokens and run off the start of the first contributing token or the
//!   end of the last one (tokens `["las", "topper"]` match `"stop"`);
//! - only the last `max(len(stop_string))` tokens are looked at, prompt tokens included;
//! - token texts are what `convert_tokens_to_string` gives behind a static prefix (`"abcdef"`), so
//!   that prefix spaces (`▁`, `Ġ`) come out as the tokenizer's decoder renders them;
//! - byte-level (GPT-2 style) and byte-fallback (`<0xAB>`) tokenizers are matched on UTF-8 bytes,
//!   so a token holding half of a multi-byte character still matches its bytes; other tokenizers
//!   are matched on Unicode code points (Python `str` indexing).
//!
//! The stop string stays in the sequence: trimming it from the text is the caller's job.

use std::collections::HashMap;

use serde_json::Value;
use tokenizers::Decoder;

use crate::error::{Error, Result};
use crate::generation::stopping::{FinishReason, StoppingCriterion};
use crate::tokenizer::Tokenizer;
use crate::TokenId;

/// The prefix transformers puts before each token before `convert_tokens_to_string`.
const STATIC_PREFIX: &str = "abcdef";

/// How token texts and stop strings are compared (HF `_get_stop_string_matching_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopStringMatchingMode {
    /// On Unicode code points (transformers' `None` mode).
    Chars,
    /// On UTF-8 bytes; tokens are mapped back through GPT-2's `bytes_to_unicode` table.
    ByteLevel,
    /// On UTF-8 bytes; `<0xAB>` tokens are the byte they name.
    ByteFallback,
}

impl StopStringMatchingMode {
    /// `byte_level` if the decoder is `ByteLevel`, else `byte_fallback` if a `ByteFallback` decoder
    /// appears anywhere in it, else `byte_level` if a nested `ByteLevel` does, else code points.
    pub fn of(tokenizer: &tokenizers::Tokenizer) -> Self {
        let Some(decoder) = tokenizer.get_decoder() else {
            return Self::Chars;
        };
        let Ok(config) = serde_json::to_value(decoder) else {
            return Self::Chars;
        };
        if config.get("type").and_then(Value::as_str) == Some("ByteLevel") {
            Self::ByteLevel
        } else if has_type(&config, "ByteFallback") {
            Self::ByteFallback
        } else if has_type(&config, "ByteLevel") {
            Self::ByteLevel
        } else {
            Self::Chars
        }
    }

    /// The units a text is matched on: bytes, or code points.
    fn units(self, text: &str) -> Vec<u32> {
        match self {
            Self::Chars => text.chars().map(u32::from).collect(),
            Self::ByteLevel | Self::ByteFallback => text.bytes().map(u32::from).collect(),
        }
    }
}

/// HF `_decoder_has_type`: a `"type": decoder_type` anywhere in the decoder's JSON.
fn has_type(config: &Value, decoder_type: &str) -> bool {
    match config {
        Value::Object(o) => {
            o.get("type").and_then(Value::as_str) == Some(decoder_type)
                || o.values().any(|v| has_type(v, decoder_type))
        }
        Value::Array(a) => a.iter().any(|v| has_type(v, decoder_type)),
        _ => false,
    }
}

/// GPT-2's `bytes_to_unicode`, inverted: the byte each printable stand-in character encodes.
fn byte_level_decoder() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut map = HashMap::with_capacity(256);
    let mut n = 0u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
        map.insert(c, b);
    }
    map
}

/// Every vocabulary token as the text it yields, in matching units (HF `clean_tokenizer_vocab`).
///
/// Building it decodes the whole vocabulary once; build it once per tokenizer and share it
/// (transformers keeps an LRU cache of these for the same reason).
#[derive(Debug, Clone)]
pub(crate) struct CleanTokenizerVocab {
    mode: StopStringMatchingMode,
    /// `(token id, clean text in units)`, in the tokenizer's vocabulary order.
    tokens: Vec<(TokenId, Vec<u32>)>,
}

impl CleanTokenizerVocab {
    /// HF `StopStringCriteria.clean_tokenizer_vocab(tokenizer, static_prefix="abcdef", mode)`.
    pub fn new(tokenizer: &Tokenizer) -> Result<Self> {
        let tok = tokenizer.inner();
        let mode = StopStringMatchingMode::of(tok);
        let byte_decoder = (mode == StopStringMatchingMode::ByteLevel).then(byte_level_decoder);
        let base = tok.encode(STATIC_PREFIX, false).map_err(|e| {
            Error::Tokenizer(format!(
                "cannot encode the stop-string prefix {STATIC_PREFIX:?}: {e}"
            ))
        })?;
        let tokens_base: Vec<String> = base
            .get_ids()
            .iter()
            .filter_map(|&id| tok.id_to_token(id))
            .collect();
        let vocab = tok.get_vocab(true);
        let mut tokens = Vec::with_capacity(vocab.len());
        for (token, id) in vocab {
            let units = match token_to_bytes(&token, mode, byte_decoder.as_ref()) {
                Some(bytes) => bytes.into_iter().map(u32::from).collect(),
                None => {
                    let mut pieces = tokens_base.clone();
                    pieces.push(token.clone());
                    let text = convert_tokens_to_string(tok, pieces)?;
                    let start = text.find(STATIC_PREFIX).ok_or_else(|| {
                        Error::Tokenizer(format!(
                            "stop strings: the decoder drops the prefix {STATIC_PREFIX:?} before \
                             token {token:?} (decoded {text:?}), so its text cannot be recovered"
                        ))
                    })?;
                    mode.units(&text[start + STATIC_PREFIX.len()..])
                }
            };
            tokens.push((id, units));
        }
        tokens.sort_unstable_by_key(|&(id, _)| id);
        Ok(Self { mode, tokens })
    }
}

/// HF `_token_to_bytes`: the bytes of a byte-level token, or of a `<0xAB>` byte-fallback token.
fn token_to_bytes(
    token: &str,
    mode: StopStringMatchingMode,
    byte_decoder: Option<&HashMap<char, u8>>,
) -> Option<Vec<u8>> {
    match mode {
        StopStringMatchingMode::ByteLevel => {
            let decoder = byte_decoder?;
            token.chars().map(|c| decoder.get(&c).copied()).collect()
        }
        StopStringMatchingMode::ByteFallback => {
            let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
            if hex.len() != 2 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            u8::from_str_radix(hex, 16).ok().map(|b| vec![b])
        }
        StopStringMatchingMode::Chars => None,
    }
}

/// HF `convert_tokens_to_string` of a fast tokenizer: the backend decoder, or tokens joined by spaces.
fn convert_tokens_to_string(tok: &tokenizers::Tokenizer, pieces: Vec<String>) -> Result<String> {
    match tok.get_decoder() {
        Some(decoder) => decoder
            .decode(pieces)
            .map_err(|e| Error::Tokenizer(format!("stop strings: cannot decode tokens: {e}"))),
        None => Ok(pieces.join(" ")),
    }
}

/// Where one token can sit in one stop string (HF `_stop_string_get_matching_positions`).
#[derive(Debug, Clone, Default)]
struct TokenPlaces {
    /// Positions `i >= 1`, counted from the end of the stop string, where the token's text may end.
    valid_positions: Vec<usize>,
    /// How many units at the end of the stop string the token covers when it is the final token.
    end_overlaps: Vec<usize>,
    /// The token's length in units (HF: the last column of `embedding_vec`).
    len: usize,
}

/// The precomputed tables of one stop string.
#[derive(Debug, Clone)]
struct StopStringTable {
    /// Length in matching units (HF `target_lens`).
    target_len: usize,
    /// Tokens that can take part in a match (no entry: the token breaks any match).
    places: HashMap<TokenId, TokenPlaces>,
}

/// HF `_stop_string_get_matching_positions` for one stop string and one token (both reversed, in units).
fn token_places(reversed_token: &[u32], reversed_stop: &[u32]) -> TokenPlaces {
    let mut places = TokenPlaces {
        len: reversed_token.len(),
        ..TokenPlaces::default()
    };
    let (tok_len, stop_len) = (reversed_token.len() as isize, reversed_stop.len() as isize);
    for i in (1 - tok_len)..stop_len {
        let (tok, i) = if i < 0 {
            (&reversed_token[(-i) as usize..], 0usize)
        } else {
            (reversed_token, i as usize)
        };
        let end = (i + tok.len()).min(reversed_stop.len());
        let stop = &reversed_stop[i.min(end)..end];
        if tok.starts_with(stop) {
            if i == 0 {
                places.end_overlaps.push(tok.len().min(stop.len()));
            } else {
                places.valid_positions.push(i);
            }
        }
    }
    places
}

/// HF `StopStringCriteria`: fires [`FinishReason::StopString`] when the row's text, ending in its
/// final token, contains one of the stop strings.
#[derive(Debug, Clone)]
pub struct StopStringCriteria {
    stop_strings: Vec<String>,
    tables: Vec<StopStringTable>,
    /// Only this many trailing tokens can take part (HF `maximum_token_len`: one unit per token).
    maximum_token_len: usize,
}

impl StopStringCriteria {
    /// HF `StopStringCriteria(tokenizer, stop_strings)`. Decodes the whole vocabulary (the engine
    /// cleans it once per tokenizer and shares it between its requests' criteria).
    pub fn new(tokenizer: &Tokenizer, stop_strings: &[String]) -> Result<Self> {
        Self::from_vocab(&CleanTokenizerVocab::new(tokenizer)?, stop_strings)
    }

    /// The criterion for `stop_strings` on an already cleaned vocabulary.
    ///
    /// Errors as transformers does when no token can end any of the stop strings. An empty stop
    /// string matches any row, as in transformers (its target length is 0).
    pub(crate) fn from_vocab(vocab: &CleanTokenizerVocab, stop_strings: &[String]) -> Result<Self> {
        if stop_strings.is_empty() {
            return Err(Error::config(
                "`stop_strings` must hold at least one string",
            ));
        }
        let reversed_tokens: Vec<(TokenId, Vec<u32>)> = vocab
            .tokens
            .iter()
            .map(|(id, units)| (*id, units.iter().rev().copied().collect()))
            .collect();
        let mut tables = Vec::with_capacity(stop_strings.len());
        let mut any_end_overlap = false;
        for stop_string in stop_strings {
            let reversed_stop: Vec<u32> = vocab.mode.units(stop_string).into_iter().rev().collect();
            let mut places = HashMap::new();
            for (id, reversed_token) in &reversed_tokens {
                let p = token_places(reversed_token, &reversed_stop);
                any_end_overlap |= !p.end_overlaps.is_empty();
                if !p.end_overlaps.is_empty() || !p.valid_positions.is_empty() {
                    places.insert(*id, p);
                }
            }
            tables.push(StopStringTable {
                target_len: reversed_stop.len(),
                places,
            });
        }
        if !any_end_overlap {
            return Err(Error::config(format!(
                "`stop_strings` {stop_strings:?}: no token of the vocabulary can end any of them \
                 (often caused by characters the tokenizer vocabulary does not contain)"
            )));
        }
        let maximum_token_len = tables.iter().map(|t| t.target_len).max().unwrap_or(0);
        Ok(Self {
            stop_strings: stop_strings.to_vec(),
            tables,
            maximum_token_len,
        })
    }

    /// The stop strings, as given.
    pub fn stop_strings(&self) -> &[String] {
        &self.stop_strings
    }

    /// Whether `tokens` (a whole row: prompt and generated) ends in a stop string.
    pub(crate) fn matches(&self, tokens: &[TokenId]) -> bool {
        // HF `input_ids[:, -maximum_token_len:]`; `-0:` is the whole row in Python.
        let start = match self.maximum_token_len {
            0 => 0,
            n => tokens.len().saturating_sub(n),
        };
        let Some((&last, earlier)) = tokens[start..].split_last() else {
            return false;
        };
        self.tables
            .iter()
            .any(|table| Self::table_matches(table, last, earlier))
    }

    /// The walk HF does with `cumsum` and the mask: start from each end overlap of the final
    /// token, then step back one token at a time while the matched length so far is a valid
    /// position for that token, adding its length; a match once the length reaches the target.
    fn table_matches(table: &StopStringTable, last: TokenId, earlier: &[TokenId]) -> bool {
        if table.target_len == 0 {
            // HF: `amax(cumsum * mask) >= 0` holds for any row.
            return true;
        }
        let Some(last_places) = table.places.get(&last) else {
            return false;
        };
        last_places.end_overlaps.iter().any(|&end| {
            let mut matched = end;
            if matched >= table.target_len {
                return true;
            }
            for id in earlier.iter().rev() {
                match table.places.get(id) {
                    Some(p) if p.valid_positions.contains(&matched) => matched += p.len,
                    _ => return false,
                }
                if matched >= table.target_len {
                    return true;
                }
            }
            false
        })
    }
}

impl StoppingCriterion for StopStringCriteria {
    fn check(&mut self, tokens: &[TokenId]) -> Option<FinishReason> {
        self.matches(tokens).then_some(FinishReason::StopString)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vocabulary of plain strings, matched on code points.
    fn vocab(tokens: &[&str]) -> CleanTokenizerVocab {
        CleanTokenizerVocab {
            mode: StopStringMatchingMode::Chars,
            tokens: tokens
                .iter()
                .enumerate()
                .map(|(i, t)| (i as TokenId, t.chars().map(u32::from).collect()))
                .collect(),
        }
    }

    fn criteria(tokens: &[&str], stops: &[&str]) -> StopStringCriteria {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        match StopStringCriteria::from_vocab(&vocab(tokens), &stops) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    const VOCAB: &[&str] = &[
        "las", "topper", "s", "t", "o", "p", "x", "stop", "xstopx", "po", "", "to",
    ];

    #[test]
    fn straddles_tokens_and_runs_off_both_ends() {
        let mut c = criteria(VOCAB, &["stop"]);
        // "las" + "topper": "s" ends "las", "top" starts "topper".
        assert_eq!(c.check(&[0, 1]), Some(FinishReason::StopString));
        // "s" "t" "o" "p" one unit per token.
        assert_eq!(c.check(&[2, 3, 4, 5]), Some(FinishReason::StopString));
        assert_eq!(c.check(&[6, 7]), Some(FinishReason::StopString));
        assert_eq!(c.check(&[8]), Some(FinishReason::StopString));
        // "s" "t" "po": the order matters.
        assert_eq!(c.check(&[2, 3, 9]), None);
        assert_eq!(c.check(&[2, 3, 4]), None);
    }

    #[test]
    fn a_stop_string_in_the_past_does_not_retrigger() {
        let mut c = criteria(VOCAB, &["stop"]);
        assert_eq!(c.check(&[7]), Some(FinishReason::StopString));
        assert_eq!(c.check(&[7, 6]), None);
        assert_eq!(c.check(&[0, 1, 6]), None);
    }

    #[test]
    fn empty_tokens_are_transparent_and_the_window_is_bounded() {
        let mut c = criteria(VOCAB, &["stop"]);
        // An empty token can sit anywhere inside the string.
        assert_eq!(c.check(&[2, 10, 11, 5]), Some(FinishReason::StopString));
        // ... but still takes a slot of the 4-token window ("s" falls out of it).
        assert_eq!(c.check(&[2, 10, 10, 11, 5]), None);
        assert_eq!(c.check(&[2, 10, 3, 4, 5]), None);
    }

    #[test]
    fn any_of_several_stop_strings() {
        let mut c = criteria(VOCAB, &["xx", "top"]);
        assert_eq!(c.check(&[3, 4, 5]), Some(FinishReason::StopString));
        assert_eq!(c.check(&[6, 6]), Some(FinishReason::StopString));
        assert_eq!(c.check(&[6]), None);
        assert_eq!(c.check(&[]), None);
    }

    #[test]
    fn unknown_ids_break_a_match() {
        let mut c = criteria(VOCAB, &["stop"]);
        assert_eq!(c.check(&[2, 999, 4, 5]), None);
        assert_eq!(c.check(&[999]), None);
    }

    #[test]
    fn no_token_can_end_the_string_is_an_error() {
        let stops = vec!["🦀".to_string()];
        assert!(StopStringCriteria::from_vocab(&vocab(VOCAB), &stops).is_err());
        assert!(StopStringCriteria::from_vocab(&vocab(VOCAB), &[]).is_err());
    }

    #[test]
    fn places_match_transformers() {
        let rev = |s: &str| s.chars().rev().map(u32::from).collect::<Vec<_>>();
        // "topper" covers the first 3 units of "stop": position 1 from the end ("p" at index 3 of
        // the reversed string is where it would end) is not valid; it can only be the final token.
        let p = token_places(&rev("topper"), &rev("stop"));
        assert_eq!(p.end_overlaps, vec![3]);
        assert!(p.valid_positions.is_empty());
        let p = token_places(&rev("las"), &rev("stop"));
        assert_eq!(p.valid_positions, vec![3]);
        assert!(p.end_overlaps.is_empty());
    }

    #[test]
    fn byte_level_table_inverts_bytes_to_unicode() {
        let d = byte_level_decoder();
        assert_eq!(d.len(), 256);
        assert_eq!(d[&'Ġ'], b' ');
        assert_eq!(d[&'Ċ'], b'\n');
        assert_eq!(d[&'a'], b'a');
    }
}
