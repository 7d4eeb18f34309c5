//! `dola_layers`: which layers DoLa contrasts with the final one, and the checks transformers 4.47
//! makes on it (`get_generation_mode` and `_dola_decoding` in `generation/utils.py`; transformers 5
//! moved DoLa to the Hub repo `transformers-community/dola`).

use serde_json::Value;

use super::{GenerationConfig, GenerationMode};
use crate::error::{Error, Result};

/// The parsed `dola_layers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DolaLayers {
    /// `"low"`: the lower half of the layers, every other one.
    Low,
    /// `"high"`: the upper half of the layers, every other one.
    High,
    /// Explicit indices into the hidden states (0 = the embedding output). As in Python, a
    /// negative index counts from the end of the `num_hidden_layers + 1` hidden states.
    Layers(Vec<i64>),
}

impl DolaLayers {
    /// Reads `"low"`, `"high"` or a list of integers.
    pub fn from_json(value: &Value) -> Result<Self> {
        let bad = || {
            Error::config(format!(
                "`dola_layers` must be either \"low\", \"high\" or a list of integers (layer indices), got {value}"
            ))
        };
        match value {
            Value::String(s) if s == "low" => Ok(Self::Low),
            Value::String(s) if s == "high" => Ok(Self::High),
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_i64().ok_or_else(bad))
                .collect::<Result<Vec<_>>>()
                .map(Self::Layers),
            _ => Err(bad()),
        }
    }

    /// The candidate premature layers for a model of `num_hidden_layers` layers, as indices into
    /// its `num_hidden_layers + 1` hidden states (transformers 4.47 `_dola_decoding`).
    ///
    /// With tied word embeddings the embedding output (layer 0) is skipped, as the LM head would
    /// turn it into an identity map: the candidates start at layer 2, or 1 for a two-layer model.
    /// For `N <= 40` layers, `"low"` is `range(start, N / 2, 2)` (just `[start]` when `start` is
    /// `N / 2`) and `"high"` `range(N / 2, N, 2)`; deeper models use `range(start, 20, 2)` and
    /// `range(N - 20, N, 2)`. Listed indices `>= N` are dropped, as in transformers.
    pub(crate) fn candidate_premature_layers(
        &self,
        num_hidden_layers: usize,
        tie_word_embeddings: bool,
    ) -> Result<Vec<usize>> {
        let n = num_hidden_layers;
        let start = match (tie_word_embeddings, n) {
            (false, _) => 0,
            (true, n) if n > 2 => 2,
            (true, 2) => 1,
            (true, _) => 0,
        };
        let layers: Vec<usize> = match self {
            Self::Low if start == n / 2 => vec![start],
            Self::Low if n <= 40 => (start..n / 2).step_by(2).collect(),
            Self::Low => (start..20).step_by(2).collect(),
            Self::High if n <= 40 => (n / 2..n).step_by(2).collect(),
            Self::High => (n - 20..n).step_by(2).collect(),
            Self::Layers(list) => {
                let states = n as i64 + 1;
                let mut layers = Vec::with_capacity(list.len());
                for &i in list.iter().filter(|&&i| i < n as i64) {
                    let index = if i < 0 { states + i } else { i };
                    if index < 0 {
                        return Err(Error::config(format!(
                            "`dola_layers` index {i} is out of range: the model has {states} hidden \
                             states (embeddings and {n} layers)"
                        )));
                    }
                    layers.push(index as usize);
                }
                layers
            }
        };
        if layers.is_empty() {
            return Err(Error::config(format!(
                "`dola_layers` {} selects no premature layer: the model has {n} layers \
                 (`num_hidden_layers`), so indices must be below {n}",
                self.describe()
            )));
        }
        Ok(layers)
    }

    fn describe(&self) -> String {
        match self {
            Self::Low => "\"low\"".into(),
            Self::High => "\"high\"".into(),
            Self::Layers(list) => format!("{list:?}"),
        }
    }
}

impl GenerationConfig {
    /// The parsed `dola_layers`, `None` when unset.
    pub(crate) fn dola_layers(&self) -> Result<Option<DolaLayers>> {
        self.dola_layers
            .as_ref()
            .map(DolaLayers::from_json)
            .transpose()
    }

    /// transformers 4.47's errors for `dola_layers`: a value that is not `"low"`, `"high"` or a
    /// list of integers, and DoLa combined with a mode other than greedy search or sampling (beam
    /// search, contrastive search, assisted decoding).
    pub(super) fn validate_dola(&self) -> Result<()> {
        if self.dola_layers()?.is_none() {
            return Ok(());
        }
        match self.mode(false) {
            GenerationMode::DolaGeneration => Ok(()),
            other => Err(Error::config(format!(
                "`dola_layers` is set, which selects DoLa decoding, but DoLa decoding only extends \
                 greedy search and sampling, and this config selects {} ({other}); unset \
                 `dola_layers` or use `num_beams=1` without `penalty_alpha` or an assistant",
                other.description()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn layers(value: Value, n: usize, tied: bool) -> Result<Vec<usize>> {
        DolaLayers::from_json(&value)?.candidate_premature_layers(n, tied)
    }

    #[test]
    fn low_and_high_follow_transformers() -> Result<()> {
        // Two layers, untied (llama): low [0], high [1]; tied (gpt2, qwen2): both [1].
        assert_eq!(layers(json!("low"), 2, false)?, vec![0]);
        assert_eq!(layers(json!("high"), 2, false)?, vec![1]);
        assert_eq!(layers(json!("low"), 2, true)?, vec![1]);
        assert_eq!(layers(json!("high"), 2, true)?, vec![1]);
        assert_eq!(layers(json!("low"), 1, true)?, vec![0]);
        assert_eq!(
            layers(json!("low"), 32, true)?,
            vec![2, 4, 6, 8, 10, 12, 14]
        );
        assert_eq!(
            layers(json!("low"), 32, false)?,
            vec![0, 2, 4, 6, 8, 10, 12, 14]
        );
        assert_eq!(
            layers(json!("high"), 32, false)?,
            (16..32).step_by(2).collect::<Vec<_>>()
        );
        assert_eq!(layers(json!("low"), 4, true)?, vec![2]);
        assert_eq!(
            layers(json!("low"), 48, true)?,
            (2..20).step_by(2).collect::<Vec<_>>()
        );
        assert_eq!(
            layers(json!("high"), 48, true)?,
            (28..48).step_by(2).collect::<Vec<_>>()
        );
        Ok(())
    }

    #[test]
    fn lists_drop_deep_indices_and_wrap_negative_ones() -> Result<()> {
        assert_eq!(layers(json!([0, 1, 5]), 2, false)?, vec![0, 1]);
        assert_eq!(layers(json!([-1, -3]), 2, false)?, vec![2, 0]);
        Ok(())
    }

    #[test]
    fn bad_values_are_errors() {
        for value in [
            json!("middle"),
            json!(3),
            json!([1.5]),
            json!(["1"]),
            json!(true),
        ] {
            let err = DolaLayers::from_json(&value).unwrap_err().to_string();
            assert!(
                err.contains(
                    "`dola_layers` must be either \"low\", \"high\" or a list of integers"
                ),
                "{err}"
            );
        }
        let empty = layers(json!([2, 7]), 2, false).unwrap_err().to_string();
        assert!(empty.contains("selects no premature layer"), "{empty}");
        let none = layers(json!([]), 2, false).unwrap_err().to_string();
        assert!(none.contains("selects no premature layer"), "{none}");
        let negative = layers(json!([-4]), 2, false).unwrap_err().to_string();
        assert!(negative.contains("index -4 is out of range"), "{negative}");
    }
}
