//! The keys of a Whisper `generation_config.json` that are not `GenerationConfig` fields
//! (transformers keeps them as custom attributes, and `WhisperGenerationMixin.generate` reads them
//! with `getattr`): `lang_to_id`, `task_to_id`, `no_timestamps_token_id`, and so on. lmgen keeps
//! such keys in [`GenerationConfig::extra`]; this reads them once, naming the key on error.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::generation::GenerationConfig;
use crate::TokenId;

/// Whisper's own generation settings, as the checkpoint (or the caller's overrides) set them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WhisperGenerationConfig {
    /// `<|notimestamps|>`; the first timestamp token is the next id.
    pub no_timestamps_token_id: Option<TokenId>,
    /// Language tokens by token text (`"<|en|>"`).
    pub lang_to_id: Option<BTreeMap<String, TokenId>>,
    /// `"transcribe"` and `"translate"` tokens.
    pub task_to_id: Option<BTreeMap<String, TokenId>>,
    /// `false` for English-only checkpoints, which refuse `language` and `task`.
    pub is_multilingual: Option<bool>,
    /// The first timestamp may be at most this many steps (of 0.02 s) in.
    pub max_initial_timestamp_index: Option<usize>,
    /// `<|startofprev|>`, which starts the previous text when decoding is conditioned on it.
    pub prev_sot_token_id: Option<TokenId>,
    /// The deprecated `[[index, token or null], ...]` prompt, read when neither `language` nor
    /// `task` is set.
    pub forced_decoder_ids: Option<Vec<(usize, Option<TokenId>)>>,
    /// The default of `return_timestamps`.
    pub return_timestamps: Option<bool>,
    /// The default language (a name, a code or a token).
    pub language: Option<String>,
    /// The default task.
    pub task: Option<String>,
    /// Default of `condition_on_prev_tokens`.
    pub condition_on_prev_tokens: Option<bool>,
    /// Default of `compression_ratio_threshold`.
    pub compression_ratio_threshold: Option<f64>,
    /// Default of `logprob_threshold`.
    pub logprob_threshold: Option<f64>,
    /// Default of `no_speech_threshold`.
    pub no_speech_threshold: Option<f64>,
    /// Whether timestamps win when their total probability beats every text token (default true;
    /// transformers reads `_detect_timestamp_from_logprob`).
    pub detect_timestamp_from_logprob: Option<bool>,
}

impl WhisperGenerationConfig {
    /// Reads the Whisper keys of `config.extra`; a key of the wrong type is an error naming it.
    pub fn from_config(config: &GenerationConfig) -> Result<Self> {
        let e = &config.extra;
        Ok(Self {
            no_timestamps_token_id: field(e, "no_timestamps_token_id")?,
            lang_to_id: field(e, "lang_to_id")?,
            task_to_id: field(e, "task_to_id")?,
            is_multilingual: field(e, "is_multilingual")?,
            max_initial_timestamp_index: field(e, "max_initial_timestamp_index")?,
            prev_sot_token_id: field(e, "prev_sot_token_id")?,
            forced_decoder_ids: field(e, "forced_decoder_ids")?,
            return_timestamps: field(e, "return_timestamps")?,
            language: field(e, "language")?,
            task: field(e, "task")?,
            condition_on_prev_tokens: field(e, "condition_on_prev_tokens")?,
            compression_ratio_threshold: field(e, "compression_ratio_threshold")?,
            logprob_threshold: field(e, "logprob_threshold")?,
            no_speech_threshold: field(e, "no_speech_threshold")?,
            detect_timestamp_from_logprob: field(e, "_detect_timestamp_from_logprob")?,
        })
    }
}

/// The key `key` of `extra` as a `T`; absent or `null` is `None`.
fn field<T: DeserializeOwned>(
    extra: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<T>> {
    match extra.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
            Error::config(format!(
                "generation config `{key}` (a Whisper setting) has the wrong type: {e}, got {v}"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::generation::config::UnknownFields;

    #[test]
    fn reads_whisper_keys_and_names_a_bad_one() {
        let file = json!({
            "no_timestamps_token_id": 50363,
            "lang_to_id": {"<|en|>": 50259},
            "task_to_id": {"transcribe": 50359, "translate": 50358},
            "forced_decoder_ids": [[1, null], [2, 50359]],
            "max_initial_timestamp_index": 50,
            "alignment_heads": [[1, 0]],
        });
        let config = GenerationConfig::from_json(&file, UnknownFields::Keep).unwrap();
        let w = WhisperGenerationConfig::from_config(&config).unwrap();
        assert_eq!(w.no_timestamps_token_id, Some(50363));
        assert_eq!(w.lang_to_id.unwrap()["<|en|>"], 50259);
        assert_eq!(
            w.forced_decoder_ids,
            Some(vec![(1, None), (2, Some(50359))])
        );
        assert_eq!(w.return_timestamps, None);
        let bad = json!({"no_timestamps_token_id": "x"});
        let config = GenerationConfig::from_json(&bad, UnknownFields::Keep).unwrap();
        let err = WhisperGenerationConfig::from_config(&config).unwrap_err();
        assert!(
            err.to_string().contains("`no_timestamps_token_id`"),
            "{err}"
        );
    }
}
