//! Batch encoding with padding, as transformers' `tokenizer(texts, padding=True)`, and the
//! tokenizer's `padding_side`.
//!
//! transformers 5 (`tokenization_utils_base.py` `PreTrainedTokenizerBase.__init__`,
//! `tokenization_utils_tokenizers.py` `TokenizersBackend.__init__`) takes `padding_side` from, in
//! order: `tokenizer_config.json`'s `padding_side`, the `padding.direction` baked into
//! `tokenizer.json`, then the tokenizer class's attribute: `"left"` for `LlamaTokenizer`,
//! `GemmaTokenizer` (and `Siglip2Tokenizer`, its subclass), `CodeLlamaTokenizer`,
//! `CohereTokenizer` and `XLNetTokenizer`, `"right"` for every other class. lmgen reads the class
//! from `tokenizer_config.json`'s `tokenizer_class` (a `Fast` suffix dropped); a file without one
//! counts as `"right"` (transformers would pick the class from `config.json`'s `model_type`).

use serde_json::Value;
use tokenizers::PaddingDirection;

use super::Tokenizer;
use crate::error::{Error, Result};

/// Which end of a shorter sequence gets the pad tokens (HF `padding_side`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingSide {
    /// Pads before the tokens (what generation wants).
    Left,
    /// Pads after the tokens: transformers' default for most tokenizer classes.
    #[default]
    Right,
}

/// Tokenizer classes whose `padding_side` class attribute is `"left"` in transformers 5.17.
const LEFT_PADDING_CLASSES: &[&str] = &[
    "LlamaTokenizer",
    "GemmaTokenizer",
    "Siglip2Tokenizer",
    "CodeLlamaTokenizer",
    "CohereTokenizer",
    "XLNetTokenizer",
];

impl PaddingSide {
    /// `padding_side` of a tokenizer with config `cfg` and backend `inner` (see the module docs).
    pub(crate) fn resolve(cfg: &Value, inner: &tokenizers::Tokenizer) -> Result<Self> {
        match cfg.get("padding_side") {
            None | Some(Value::Null) => {}
            Some(Value::String(side)) if side == "left" => return Ok(PaddingSide::Left),
            Some(Value::String(side)) if side == "right" => return Ok(PaddingSide::Right),
            Some(other) => {
                return Err(Error::Tokenizer(format!(
                    "`padding_side` must be \"left\" or \"right\", got {other}"
                )))
            }
        }
        if let Some(padding) = inner.get_padding() {
            return Ok(match padding.direction {
                PaddingDirection::Left => PaddingSide::Left,
                PaddingDirection::Right => PaddingSide::Right,
            });
        }
        let class = cfg.get("tokenizer_class").and_then(Value::as_str);
        let class = class.map(|c| c.strip_suffix("Fast").unwrap_or(c));
        Ok(match class {
            Some(c) if LEFT_PADDING_CLASSES.contains(&c) => PaddingSide::Left,
            _ => PaddingSide::Right,
        })
    }
}

impl Tokenizer {
    /// Which side [`Tokenizer::encode_padded`] pads (HF `tokenizer.padding_side`).
    pub fn padding_side(&self) -> PaddingSide {
        self.padding_side
    }

    /// HF `tokenizer(texts, padding=True).input_ids`: each text encoded with the special tokens
    /// the tokenizer adds, then padded with `pad_token` to the longest on
    /// [`Tokenizer::padding_side`]. Without a pad token this is an error, as in transformers (even
    /// for one text).
    pub fn encode_padded(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let pad = self.pad_token_id().ok_or_else(|| {
            Error::Tokenizer(
                "asking to pad but the tokenizer does not have a padding token (`pad_token` in \
                 tokenizer_config.json)"
                    .into(),
            )
        })?;
        let rows = texts
            .iter()
            .map(|text| self.encode(text))
            .collect::<Result<Vec<_>>>()?;
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        Ok(rows
            .into_iter()
            .map(|row| {
                let padding = vec![pad; width - row.len()];
                match self.padding_side {
                    PaddingSide::Left => [padding, row].concat(),
                    PaddingSide::Right => [row, padding].concat(),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn backend() -> tokenizers::Tokenizer {
        tokenizers::Tokenizer::new(tokenizers::models::bpe::BPE::default())
    }

    #[test]
    fn padding_side_follows_config_then_json_then_class() -> Result<()> {
        let inner = backend();
        let side = |cfg| PaddingSide::resolve(&cfg, &inner);
        assert_eq!(side(json!({}))?, PaddingSide::Right);
        assert_eq!(
            side(json!({"tokenizer_class": "LlamaTokenizerFast"}))?,
            PaddingSide::Left
        );
        assert_eq!(
            side(json!({"tokenizer_class": "GemmaTokenizer"}))?,
            PaddingSide::Left
        );
        assert_eq!(
            side(json!({"tokenizer_class": "Qwen2Tokenizer"}))?,
            PaddingSide::Right
        );
        assert_eq!(
            side(json!({"tokenizer_class": "LlamaTokenizer", "padding_side": "right"}))?,
            PaddingSide::Right
        );
        let mut padded = backend();
        padded.with_padding(Some(tokenizers::PaddingParams {
            direction: PaddingDirection::Left,
            ..Default::default()
        }));
        assert_eq!(
            PaddingSide::resolve(&json!({"tokenizer_class": "Qwen2Tokenizer"}), &padded)?,
            PaddingSide::Left
        );
        let bad = side(json!({"padding_side": "top"}));
        assert!(
            matches!(&bad, Err(Error::Tokenizer(m)) if m.contains("`padding_side`")),
            "{bad:?}"
        );
        Ok(())
    }
}
