//! Length resolution: `max_length`/`max_new_tokens` and `min_length`/`min_new_tokens` to absolute lengths.
//!
//! Port of `_prepare_generated_length` and `_validate_generated_length`
//! (`src/transformers/generation/utils.py`, transformers 5).

use super::{GenerationConfig, DEFAULT_MAX_NEW_TOKENS};
use crate::error::{Error, Result};

/// Absolute lengths for one `generate()` call, prompt included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lengths {
    /// Stop when a sequence reaches this many tokens (`MaxLengthCriteria`).
    pub max_length: usize,
    /// EOS is masked while a sequence is shorter than this (`MinLengthLogitsProcessor`).
    pub min_length: usize,
}

impl GenerationConfig {
    /// Absolute `max_length` and `min_length` for a prompt of `input_len` tokens (padded length), as
    /// transformers' `_prepare_generated_length` and `_validate_generated_length` (`generation/utils.py`).
    ///
    /// `max_new_tokens` wins; else an explicit `max_length` is the total length; else (nobody set
    /// `max_length`) 20 new tokens, capped at `max_position_embeddings`. `min_new_tokens` likewise wins
    /// over `min_length`. A prompt that already reaches `max_length` is an [`Error::Input`].
    pub fn resolve_lengths(
        &self,
        input_len: usize,
        max_position_embeddings: Option<usize>,
    ) -> Result<Lengths> {
        let max_length = match (self.max_new_tokens, self.max_length) {
            (Some(new_tokens), _) => new_tokens.saturating_add(input_len),
            (None, Some(max_length)) => max_length,
            (None, None) => {
                let max_length = DEFAULT_MAX_NEW_TOKENS.saturating_add(input_len);
                max_position_embeddings.map_or(max_length, |cap| max_length.min(cap))
            }
        };
        if input_len >= max_length {
            return Err(Error::input(format!(
                "input length of input_ids is {input_len}, but `max_length` is set to {max_length}; \
                 increase `max_length` or, better, set `max_new_tokens`"
            )));
        }
        let min_length = match self.min_new_tokens {
            Some(new_tokens) => new_tokens.saturating_add(input_len),
            None => self.min_length.unwrap_or(0),
        };
        Ok(Lengths {
            max_length,
            min_length,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::UnknownFields;
    use super::*;

    fn parse(value: Value) -> Result<GenerationConfig> {
        GenerationConfig::from_json(&value, UnknownFields::Reject)
    }

    #[test]
    fn lengths_follow_prepare_generated_length() -> Result<()> {
        let lengths =
            |value: Value, input_len, max_pos| parse(value)?.resolve_lengths(input_len, max_pos);
        let new_tokens = lengths(json!({"max_new_tokens": 5, "max_length": 100}), 7, Some(8))?;
        assert_eq!(
            new_tokens,
            Lengths {
                max_length: 12,
                min_length: 0
            }
        );
        assert_eq!(lengths(json!({}), 7, None)?.max_length, 27);
        assert_eq!(lengths(json!({}), 7, Some(10))?.max_length, 10);
        assert_eq!(
            lengths(json!({"max_length": 30}), 7, Some(10))?.max_length,
            30
        );
        let too_long = lengths(json!({"max_length": 7}), 7, None);
        assert!(
            matches!(&too_long, Err(Error::Input { message: m, .. }) if m.contains("input length of input_ids is 7"))
        );
        assert!(lengths(json!({}), 10, Some(10)).is_err());
        let min = lengths(json!({"min_new_tokens": 3, "min_length": 100}), 7, None)?;
        assert_eq!(min.min_length, 10);
        assert_eq!(lengths(json!({"min_length": 9}), 7, None)?.min_length, 9);
        Ok(())
    }
}
