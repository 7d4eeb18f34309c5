//! Whisper's tokens as text: a segment's words without the timestamp and special tokens (HF
//! `WhisperTokenizer.decode(skip_special_tokens=True)`, which filters `<|0.00|>`-style tokens),
//! and timestamps as `HH:MM:SS.mmm` for subtitles.

use super::segments::Segment;
use crate::error::Result;
use crate::tokenizer::Tokenizer;
use crate::TokenId;

/// The text of `tokens`: timestamp tokens (from `timestamp_begin` on) and special tokens left
/// out.
pub fn decode_text(
    tokenizer: &Tokenizer,
    tokens: &[TokenId],
    timestamp_begin: TokenId,
) -> Result<String> {
    let text: Vec<TokenId> = tokens
        .iter()
        .copied()
        .filter(|&t| t < timestamp_begin)
        .collect();
    tokenizer.decode(&text, true)
}

/// A segment's text with its times.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedText {
    /// Start in seconds.
    pub start: f64,
    /// End in seconds.
    pub end: f64,
    /// The words.
    pub text: String,
}

/// Every segment of a row as text (segments whose text is empty included).
pub fn segments_text(
    tokenizer: &Tokenizer,
    segments: &[Segment],
    timestamp_begin: TokenId,
) -> Result<Vec<TimedText>> {
    segments
        .iter()
        .map(|s| {
            Ok(TimedText {
                start: s.start,
                end: s.end,
                text: decode_text(tokenizer, &s.tokens, timestamp_begin)?,
            })
        })
        .collect()
}

/// `seconds` as `HH:MM:SS.mmm` (`,` before the milliseconds with `srt`), rounded to the
/// millisecond.
pub fn format_timestamp(seconds: f64, srt: bool) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    let sep = if srt { ',' } else { '.' };
    format!("{h:02}:{m:02}:{s:02}{sep}{ms:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_for_subtitles() {
        assert_eq!(format_timestamp(0.0, false), "00:00:00.000");
        assert_eq!(format_timestamp(3661.5, true), "01:01:01,500");
        assert_eq!(format_timestamp(29.98, false), "00:00:29.980");
    }
}
