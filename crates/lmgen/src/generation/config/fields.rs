//! How each field's JSON value is read: the value types and the error naming what was expected.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::TokenId;

/// One token id or a list of them (`eos_token_id`, `forced_eos_token_id`), kept in the form given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id, e.g. `"eos_token_id": 2`.
    One(TokenId),
    /// A list of ids, e.g. `"eos_token_id": [128001, 128009]`.
    Many(Vec<TokenId>),
}

impl TokenIds {
    /// The ids as a slice, whatever the form.
    pub fn as_slice(&self) -> &[TokenId] {
        match self {
            TokenIds::One(id) => std::slice::from_ref(id),
            TokenIds::Many(ids) => ids,
        }
    }
}

/// `early_stopping` for beam search: `true`, `false` or `"never"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyStopping {
    /// Stop as soon as `num_beams` hypotheses are finished.
    True,
    /// Stop when a better hypothesis is very unlikely (heuristic; transformers' default).
    False,
    /// Stop only when no better hypothesis can exist (canonical beam search).
    Never,
}

impl Serialize for EarlyStopping {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            EarlyStopping::True => serializer.serialize_bool(true),
            EarlyStopping::False => serializer.serialize_bool(false),
            EarlyStopping::Never => serializer.serialize_str("never"),
        }
    }
}

/// How one field's JSON value is read, and what the error says was expected.
pub(super) trait FieldType: Sized {
    const EXPECTED: &'static str;
    fn parse(value: &Value) -> Option<Self>;
}

fn via_serde<T: DeserializeOwned>(value: &Value) -> Option<T> {
    T::deserialize(value).ok()
}

macro_rules! serde_field_types {
    ($($ty:ty => $expected:literal),* $(,)?) => {$(
        impl FieldType for $ty {
            const EXPECTED: &'static str = $expected;
            fn parse(value: &Value) -> Option<Self> {
                via_serde(value)
            }
        }
    )*};
}

serde_field_types! {
    usize => "a non-negative integer",
    TokenId => "a non-negative integer token id",
    f64 => "a number",
    bool => "a boolean",
    String => "a string",
    TokenIds => "a token id or a list of token ids",
    Vec<TokenId> => "a list of token ids",
    Vec<Vec<TokenId>> => "a list of lists of token ids",
    Vec<(Vec<TokenId>, f64)> => "a list of `[[token ids], bias]` pairs",
    (usize, f64) => "a `[start_index, decay_factor]` pair",
}

impl FieldType for EarlyStopping {
    const EXPECTED: &'static str = "`true`, `false` or \"never\"";
    fn parse(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(true) => Some(EarlyStopping::True),
            Value::Bool(false) => Some(EarlyStopping::False),
            Value::String(s) if s == "never" => Some(EarlyStopping::Never),
            _ => None,
        }
    }
}

impl FieldType for Vec<String> {
    const EXPECTED: &'static str = "a string or a list of strings";
    fn parse(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(vec![s.clone()]),
            _ => via_serde(value),
        }
    }
}

impl FieldType for Value {
    const EXPECTED: &'static str = "a JSON value";
    fn parse(value: &Value) -> Option<Self> {
        Some(value.clone())
    }
}

/// A JSON value for an error message, cut short if long.
pub(super) fn show(value: &Value) -> String {
    const MAX_CHARS: usize = 80;
    let text = value.to_string();
    if text.chars().count() <= MAX_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_CHARS).collect();
    cut.push_str("...");
    cut
}

pub(super) fn parse_field<T: FieldType>(key: &str, value: &Value) -> Result<Option<T>> {
    if value.is_null() {
        return Ok(None);
    }
    T::parse(value).map(Some).ok_or_else(|| {
        Error::config(format!(
            "`{key}` must be {}, got {}",
            T::EXPECTED,
            show(value)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = Value::String("é".repeat(200));
        assert!(show(&long).chars().count() < 90);
    }
}
