//! `GenerationConfig`: transformers' generation settings, field for field.
//!
//! Port of `transformers.GenerationConfig` (transformers 5,
//! `src/transformers/generation/configuration_utils.py`). As in transformers 5, every field defaults to
//! unset (`None`), and concrete defaults are applied only at generation time to fields still unset
//! (`GenerationConfig::with_defaults`, `_get_default_generation_params`). Precedence, lowest first:
//! global defaults < the checkpoint's `generation_config.json` (or, without one, the generation keys of
//! `config.json`) < the caller's overrides ([`GenerationConfig::update`]).
//!
//! Loading and saving are in `config/load.rs`, `validate()` in `config/validate.rs`, mode selection
//! (`GenerationMode`) and the "not built yet" gate (`check_implemented`) in `config/mode.rs`.
//!
//! Deliberate differences from transformers:
//! - JSON `null` means unset, so a caller cannot unset a checkpoint's value with `null` (transformers'
//!   `generate(top_k=None)` can).
//! - Numbers are typed at parse time: an integer is accepted where a float is expected (transformers'
//!   `TemperatureLogitsWarper` and `RepetitionPenaltyLogitsProcessor` reject a Python `int` such as `2`).
//! - `stop_strings` is always a list (a single string is read as a one-element list).
//! - `sequence_bias` takes only transformers' JSON form, a list of `[[ids], bias]` pairs.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::TokenId;

mod dola;
mod fields;
mod lengths;
mod load;
mod mode;
mod validate;

use fields::{parse_field, show};
pub use fields::{EarlyStopping, TokenIds};
pub use lengths::Lengths;
pub(crate) use mode::GenerationMode;

/// A checkpoint's generation config file (transformers' `GENERATION_CONFIG_NAME`).
pub(crate) const GENERATION_CONFIG_NAME: &str = "generation_config.json";
/// A checkpoint's model config file, read when `generation_config.json` is absent.
pub(crate) const MODEL_CONFIG_NAME: &str = "config.json";
/// transformers' default `max_length`, which means this many *new* tokens when nobody set `max_length`.
pub(crate) const DEFAULT_MAX_NEW_TOKENS: usize = 20;

/// Keys transformers accepts in a config file and drops (`__init__` pops `_commit_hash`).
const DROPPED_KEYS: &[&str] = &["_commit_hash"];
/// Where `from_model_config` looks for a decoder's generation keys, first non-empty wins.
const DECODER_CONFIG_KEYS: &[&str] = &["decoder", "generator", "text_config"];

/// What [`GenerationConfig::from_json`] does with a key that is not a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownFields {
    /// A caller's overrides: an unknown key is an error (catches typos).
    Reject,
    /// A `generation_config.json`: unknown keys are kept in `extra`, as transformers keeps custom attributes.
    Keep,
}

macro_rules! field_key {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident, $key:literal) => {
        $key
    };
}

/// Declares the struct and the code that must list every field (parsing, merging).
macro_rules! generation_config {
    ($($(#[doc = $doc:literal])* $field:ident $(= $key:literal)?: $ty:ty,)*) => {
        /// Settings of one `generate()` call: HF `transformers.GenerationConfig`, every field optional.
        ///
        /// Field names are transformers' (the JSON keys); "default" in each field's doc is the value
        /// transformers uses when the field is unset, applied at generation time (`with_defaults`).
        #[doc(alias = "transformers.GenerationConfig")]
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct GenerationConfig {
            $(
                $(#[doc = $doc])*
                $(#[serde(rename = $key)])?
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            /// Keys of a `generation_config.json` that are not fields, kept as transformers keeps custom
            /// attributes; they change nothing in lmgen.
            #[serde(flatten)]
            pub extra: Map<String, Value>,
        }

        impl GenerationConfig {
            /// Every field's JSON name, in transformers' `__init__` order.
            pub const FIELDS: &'static [&'static str] = &[$(field_key!($field $(, $key)?)),*];

            /// Sets the field named `key` from JSON (`null` unsets it); `Ok(false)` if no field has that name.
            fn set_field(&mut self, key: &str, value: &Value) -> Result<bool> {
                $(
                    if key == field_key!($field $(, $key)?) {
                        self.$field = parse_field(key, value)?;
                        return Ok(true);
                    }
                )*
                Ok(false)
            }

            /// Every field set in `overrides` replaces this one's; extra keys are merged.
            pub fn update(&mut self, overrides: &GenerationConfig) {
                $(
                    if overrides.$field.is_some() {
                        self.$field.clone_from(&overrides.$field);
                    }
                )*
                for (key, value) in &overrides.extra {
                    self.extra.insert(key.clone(), value.clone());
                }
            }

            /// Fills the fields still unset here from `fallback`.
            fn fill_unset_from(&mut self, fallback: &GenerationConfig) {
                $(
                    if self.$field.is_none() {
                        self.$field.clone_from(&fallback.$field);
                    }
                )*
            }
        }
    };
}

generation_config! {
    // Length of the output.
    /// Total length, prompt included. Default 20, which then means 20 *new* tokens (see `resolve_lengths`).
    max_length: usize,
    /// Tokens to generate, prompt excluded; wins over `max_length`. Default unset.
    max_new_tokens: usize,
    /// Minimum total length, prompt included (EOS is masked until then). Default 0.
    min_length: usize,
    /// Minimum new tokens; wins over `min_length`. Default unset.
    min_new_tokens: usize,
    /// Beam search stopping rule. Default `false`.
    early_stopping: EarlyStopping,
    /// Time budget in seconds; the current step still finishes. Default unset.
    max_time: f64,
    /// Strings that end generation when produced (a string or a list). Default unset.
    stop_strings: Vec<String>,
    // Strategy.
    /// Sample instead of taking the argmax. Default `false`.
    do_sample: bool,
    /// Beams for beam search; 1 means no beam search. Default 1.
    num_beams: usize,
    /// Use the model's multi-token-prediction heads as the draft (assisted decoding). Default unset.
    use_mtp: bool,
    // Cache.
    /// Use the KV cache. Default `true`.
    use_cache: bool,
    /// Cache class: "dynamic", "static", "offloaded", "offloaded_static", "quantized", "paged", ... Default
    /// unset (the model's default, usually dynamic).
    cache_implementation: String,
    /// Arguments for the cache class. Default unset.
    cache_config: Value,
    /// Length of a static cache. Default unset.
    max_cache_len: usize,
    // Logits manipulation.
    /// Divides the logits when sampling. Default 1.0.
    temperature: f64,
    /// Keep the k most likely tokens when sampling; 0 disables. Default 50.
    top_k: usize,
    /// Nucleus sampling mass. Default 1.0 (off).
    top_p: f64,
    /// Minimum probability relative to the most likely token, in [0, 1]. Default unset.
    min_p: f64,
    /// Entropy-bounded truncation (Top-H), in (0, 1]. Default unset.
    top_h: f64,
    /// Locally typical sampling mass. Default 1.0 (off).
    typical_p: f64,
    /// Epsilon sampling cutoff, active in (0, 1). Default 0.0.
    epsilon_cutoff: f64,
    /// Eta sampling cutoff, active in (0, 1). Default 0.0.
    eta_cutoff: f64,
    /// CTRL repetition penalty; 1.0 is none. Default 1.0.
    repetition_penalty: f64,
    /// Penalty on tokens not in the encoder input (encoder-decoder). Default 1.0.
    encoder_repetition_penalty: f64,
    /// Exponent of the length normalisation of beam scores. Default 1.0.
    length_penalty: f64,
    /// Ban repeating n-grams of this size; 0 disables. Default 0.
    no_repeat_ngram_size: usize,
    /// Token sequences that must not be generated. Default unset.
    bad_words_ids: Vec<Vec<TokenId>>,
    /// Log-softmax the scores after all processors. Default unset (false).
    renormalize_logits: bool,
    /// Token forced first after the decoder start token. Default unset.
    forced_bos_token_id: TokenId,
    /// Token(s) forced when `max_length` is reached. Default unset.
    forced_eos_token_id: TokenIds,
    /// Replace nan and inf in the logits. Default `false`.
    remove_invalid_values: bool,
    /// `[start_index, decay_factor]`: exponentially raise EOS after `start_index` new tokens. Default unset.
    exponential_decay_length_penalty: (usize, f64),
    /// Tokens whose logits are set to -inf at every step. Default unset.
    suppress_tokens: Vec<TokenId>,
    /// Tokens suppressed at the first generated position. Default unset.
    begin_suppress_tokens: Vec<TokenId>,
    /// `[[ids], bias]` pairs added to the logit of the last id when the others precede it. Default unset.
    sequence_bias: Vec<(Vec<TokenId>, f64)>,
    /// Re-tokenise the end of the prompt (needs the tokenizer). Default unset (false).
    token_healing: bool,
    /// Classifier-free guidance scale; active when not 1. Default unset.
    guidance_scale: f64,
    /// Watermarking (`WatermarkingConfig` or `SynthIDTextWatermarkingConfig` as a dict). Default unset.
    watermarking_config: Value,
    // Output.
    /// Sequences returned per prompt. Default 1.
    num_return_sequences: usize,
    /// Return attention weights (with `return_dict_in_generate`). Default unset (false).
    output_attentions: bool,
    /// Return hidden states (with `return_dict_in_generate`). Default unset (false).
    output_hidden_states: bool,
    /// Return the processed scores (with `return_dict_in_generate`). Default `false`.
    output_scores: bool,
    /// Return the raw logits (with `return_dict_in_generate`). Default unset (false).
    output_logits: bool,
    /// Return a structured output instead of the sequences only. Default `false`.
    return_dict_in_generate: bool,
    // Special tokens.
    /// Padding token; falls back to the first EOS id. Default unset.
    pad_token_id: TokenId,
    /// Beginning-of-sequence token. Default unset.
    bos_token_id: TokenId,
    /// End-of-sequence token(s). Default unset.
    eos_token_id: TokenIds,
    // Encoder-decoder only.
    /// Ban n-grams of the encoder input of this size in the output. Default 0.
    encoder_no_repeat_ngram_size: usize,
    /// First decoder token (an id or a per-batch list). Default unset.
    decoder_start_token_id: Value,
    // Assisted (speculative) decoding.
    /// This model is the assistant of another. Default unset.
    is_assistant: bool,
    /// Draft tokens per step. Default 20.
    num_assistant_tokens: usize,
    /// "constant", "heuristic" or "heuristic_transient". Default "constant".
    num_assistant_tokens_schedule: String,
    /// The assistant stops drafting below this confidence. Default 0.4.
    assistant_confidence_threshold: f64,
    /// Prompt lookup decoding: draft tokens copied from the prompt. Default unset.
    prompt_lookup_num_tokens: usize,
    /// Longest n-gram matched by prompt lookup. Default unset (2 where used).
    max_matching_ngram_size: usize,
    /// Self-speculation with the first N layers as the draft. Default unset.
    assistant_early_exit: usize,
    /// Look-behind window of the assistant (different tokenizers). Default 10.
    assistant_lookbehind: usize,
    /// Look-behind window of the target (different tokenizers). Default 10.
    target_lookbehind: usize,
    /// Lossy ensemble verification weight, in (0, 1). Default unset (lossless).
    assistant_ensemble_weight: f64,
    /// Speculation proposer; only "dflash". Default unset.
    speculation_type: String,
    // Performance.
    /// `torch.compile` settings (`CompileConfig` as a dict). Default unset.
    compile_config: Value,
    /// Never compile. Default unset.
    disable_compile: bool,
    /// Deprecated since 5.13: continuous batching settings. Default unset.
    continuous_batching_config: Value,
    // Deprecated: moved to Hub `custom_generate` repos.
    /// Sequential beam search (rejected by transformers 5's beam search). Default unset.
    low_memory: bool,
    /// Contrastive search degeneration penalty (with `top_k > 1`). Default unset.
    penalty_alpha: f64,
    /// DoLa layers: "low", "high" or a list of layer indices. Default unset.
    dola_layers: Value,
    /// Diverse beam search penalty between groups. Default 0.0.
    diversity_penalty: f64,
    /// Groups of diverse beam search. Default 1.
    num_beam_groups: usize,
    /// Constrained beam search constraints. Default unset.
    constraints: Value,
    /// Words that must appear (constrained beam search). Default unset.
    force_words_ids: Value,
    /// Prefill the prompt in chunks of this many tokens. Default unset.
    prefill_chunk_size: usize,
    // Metadata.
    /// Built from a model's `config.json` rather than read from `generation_config.json`.
    from_model_config = "_from_model_config": bool,
    /// The transformers version that wrote the file.
    transformers_version: String,
}

impl GenerationConfig {
    /// Reads a JSON object field by field; `null` leaves a field unset.
    ///
    /// A value of the wrong type is an error naming the field and what was expected. A key that is not a
    /// field is an error or kept in [`GenerationConfig::extra`], as `unknown` says; as in transformers'
    /// `__init__`, `_commit_hash` is dropped, and so are the custom keys of a config with
    /// `_from_model_config: true`.
    pub fn from_json(value: &Value, unknown: UnknownFields) -> Result<Self> {
        let object = as_object(value)?;
        let mut config = Self::default();
        for (key, value) in object {
            reject_integer_penalty(key, value)?;
            if config.set_field(key, value)? || DROPPED_KEYS.contains(&key.as_str()) {
                continue;
            }
            match unknown {
                UnknownFields::Reject => {
                    return Err(Error::config(format!(
                        "unknown generation config field `{key}`"
                    )))
                }
                UnknownFields::Keep => {
                    config.extra.insert(key.clone(), value.clone());
                }
            }
        }
        if config.from_model_config == Some(true) {
            config.extra.clear();
        }
        Ok(config)
    }

    /// transformers' global defaults (`_get_default_generation_params`), applied to fields nobody set.
    ///
    /// `max_length` is left out: unset, it means [`DEFAULT_MAX_NEW_TOKENS`] new tokens, which
    /// [`GenerationConfig::resolve_lengths`] applies.
    pub(crate) fn global_defaults() -> Self {
        Self {
            min_length: Some(0),
            do_sample: Some(false),
            use_cache: Some(true),
            early_stopping: Some(EarlyStopping::False),
            num_beams: Some(1),
            temperature: Some(1.0),
            top_k: Some(50),
            top_p: Some(1.0),
            typical_p: Some(1.0),
            repetition_penalty: Some(1.0),
            length_penalty: Some(1.0),
            no_repeat_ngram_size: Some(0),
            encoder_no_repeat_ngram_size: Some(0),
            num_return_sequences: Some(1),
            output_scores: Some(false),
            return_dict_in_generate: Some(false),
            remove_invalid_values: Some(false),
            epsilon_cutoff: Some(0.0),
            eta_cutoff: Some(0.0),
            encoder_repetition_penalty: Some(1.0),
            num_assistant_tokens: Some(20),
            num_assistant_tokens_schedule: Some("constant".to_owned()),
            assistant_confidence_threshold: Some(0.4),
            assistant_lookbehind: Some(10),
            target_lookbehind: Some(10),
            num_beam_groups: Some(1),
            diversity_penalty: Some(0.0),
            ..Self::default()
        }
    }

    /// This config with every field still unset filled from [`GenerationConfig::global_defaults`].
    pub(crate) fn with_defaults(&self) -> Self {
        let mut config = self.clone();
        config.fill_unset_from(&Self::global_defaults());
        config
    }

    /// The EOS ids as a list (empty when unset), as transformers' `_prepare_special_tokens`.
    pub fn eos_token_ids(&self) -> Vec<TokenId> {
        self.eos_token_id
            .as_ref()
            .map_or_else(Vec::new, |ids| ids.as_slice().to_vec())
    }

    /// The padding id: `pad_token_id`, else the first EOS id (`_prepare_special_tokens`).
    pub fn pad_token_id_or_eos(&self) -> Option<TokenId> {
        self.pad_token_id.or_else(|| {
            self.eos_token_id
                .as_ref()
                .and_then(|ids| ids.as_slice().first().copied())
        })
    }
}

fn as_object(value: &Value) -> Result<&Map<String, Value>> {
    value.as_object().ok_or_else(|| {
        Error::config(format!(
            "a generation config must be a JSON object, got {}",
            show(value)
        ))
    })
}

/// transformers' `RepetitionPenaltyLogitsProcessor` accepts only a Python float: an integer other
/// than 1 (which builds no processor) is an error there, so it is here, at parse time. The processor
/// is built in every mode, so this is exactly when transformers raises.
fn reject_integer_penalty(key: &str, value: &Value) -> Result<()> {
    if key == "repetition_penalty"
        && (value.is_i64() || value.is_u64())
        && value.as_f64() != Some(1.0)
    {
        return Err(Error::config(format!(
            "`repetition_penalty` has to be a strictly positive float, but is {value} (an integer; write {value}.0)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<GenerationConfig> {
        GenerationConfig::from_json(&value, UnknownFields::Reject)
    }

    fn message(result: Result<GenerationConfig>) -> String {
        result.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn an_integer_repetition_penalty_is_an_error_except_one() {
        let err =
            GenerationConfig::from_json(&json!({"repetition_penalty": 2}), UnknownFields::Reject)
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("`repetition_penalty` has to be a strictly positive float"),
            "{err}"
        );
        assert!(GenerationConfig::from_json(
            &json!({"repetition_penalty": 1}),
            UnknownFields::Reject
        )
        .is_ok());
        assert!(GenerationConfig::from_json(
            &json!({"repetition_penalty": 2.0}),
            UnknownFields::Reject
        )
        .is_ok());
    }

    #[test]
    fn eos_token_id_takes_an_int_or_a_list() -> Result<()> {
        let one = parse(json!({"eos_token_id": 2}))?;
        assert_eq!(one.eos_token_id, Some(TokenIds::One(2)));
        assert_eq!(one.eos_token_ids(), vec![2]);
        let many = parse(json!({"eos_token_id": [7, 3], "forced_eos_token_id": [3]}))?;
        assert_eq!(many.eos_token_ids(), vec![7, 3]);
        assert_eq!(many.forced_eos_token_id, Some(TokenIds::Many(vec![3])));
        assert_eq!(
            GenerationConfig::default().eos_token_ids(),
            Vec::<TokenId>::new()
        );
        Ok(())
    }

    #[test]
    fn pad_falls_back_to_the_first_eos() -> Result<()> {
        assert_eq!(
            parse(json!({"eos_token_id": [7, 3]}))?.pad_token_id_or_eos(),
            Some(7)
        );
        let both = parse(json!({"eos_token_id": [7, 3], "pad_token_id": 0}))?;
        assert_eq!(both.pad_token_id_or_eos(), Some(0));
        assert_eq!(GenerationConfig::default().pad_token_id_or_eos(), None);
        Ok(())
    }

    #[test]
    fn early_stopping_is_a_bool_or_never() -> Result<()> {
        let never = parse(json!({"early_stopping": "never"}))?;
        assert_eq!(never.early_stopping, Some(EarlyStopping::Never));
        assert_eq!(
            parse(json!({"early_stopping": true}))?.early_stopping,
            Some(EarlyStopping::True)
        );
        assert_eq!(
            parse(json!({"early_stopping": false}))?.early_stopping,
            Some(EarlyStopping::False)
        );
        let bad = message(parse(json!({"early_stopping": "sometimes"})));
        assert!(
            bad.contains(
                "`early_stopping` must be `true`, `false` or \"never\", got \"sometimes\""
            ),
            "{bad}"
        );
        Ok(())
    }

    #[test]
    fn a_wrong_type_names_the_field_and_the_expectation() {
        let bad = message(parse(json!({"max_new_tokens": "ten"})));
        assert_eq!(
            bad,
            "invalid generation config: `max_new_tokens` must be a non-negative integer, got \"ten\""
        );
        let cases = [
            (
                json!({"pad_token_id": -1}),
                "`pad_token_id` must be a non-negative integer token id",
            ),
            (
                json!({"temperature": "hot"}),
                "`temperature` must be a number",
            ),
            (json!({"do_sample": 1}), "`do_sample` must be a boolean"),
            (
                json!({"max_length": 2.5}),
                "`max_length` must be a non-negative integer",
            ),
            (
                json!({"bad_words_ids": [1, 2]}),
                "`bad_words_ids` must be a list of lists of token ids",
            ),
            (
                json!({"exponential_decay_length_penalty": [1]}),
                "`exponential_decay_length_penalty` must be",
            ),
        ];
        for (value, expected) in cases {
            let bad = message(parse(value));
            assert!(bad.contains(expected), "{bad}");
        }
        assert!(message(parse(json!([1]))).contains("must be a JSON object"));
    }

    #[test]
    fn list_valued_fields_take_transformers_json_forms() -> Result<()> {
        let c = parse(json!({
            "stop_strings": "###",
            "sequence_bias": [[[1, 2], -1.5], [[3], 2]],
            "exponential_decay_length_penalty": [5, 1.5],
            "bad_words_ids": [[4], [5, 6]],
            "suppress_tokens": [1],
            "dola_layers": "high",
        }))?;
        assert_eq!(c.stop_strings, Some(vec!["###".to_owned()]));
        assert_eq!(
            c.sequence_bias,
            Some(vec![(vec![1, 2], -1.5), (vec![3], 2.0)])
        );
        assert_eq!(c.exponential_decay_length_penalty, Some((5, 1.5)));
        assert_eq!(c.bad_words_ids, Some(vec![vec![4], vec![5, 6]]));
        assert_eq!(c.dola_layers, Some(json!("high")));
        let list = parse(json!({"stop_strings": ["a", "b"]}))?;
        assert_eq!(
            list.stop_strings,
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        Ok(())
    }

    #[test]
    fn null_means_unset() -> Result<()> {
        let c = parse(json!({"top_k": null, "eos_token_id": null, "watermarking_config": null}))?;
        assert_eq!(c, GenerationConfig::default());
        Ok(())
    }

    #[test]
    fn unknown_keys_are_rejected_or_kept() -> Result<()> {
        let value = json!({"top_k": 5, "foo": 1});
        let bad = message(GenerationConfig::from_json(&value, UnknownFields::Reject));
        assert_eq!(
            bad,
            "invalid generation config: unknown generation config field `foo`"
        );
        let kept = GenerationConfig::from_json(&value, UnknownFields::Keep)?;
        assert_eq!(kept.top_k, Some(5));
        assert_eq!(kept.extra.get("foo"), Some(&json!(1)));
        // transformers drops `_commit_hash`, and the custom keys of a config built from config.json.
        let dropped = json!({"_commit_hash": "abc", "_from_model_config": true, "foo": 1});
        let c = GenerationConfig::from_json(&dropped, UnknownFields::Keep)?;
        assert!(c.extra.is_empty());
        assert_eq!(c.from_model_config, Some(true));
        Ok(())
    }

    #[test]
    fn every_field_name_parses() -> Result<()> {
        assert_eq!(GenerationConfig::FIELDS.len(), 73);
        for key in GenerationConfig::FIELDS {
            assert!(
                GenerationConfig::default().set_field(key, &Value::Null)?,
                "{key}"
            );
        }
        assert!(GenerationConfig::FIELDS.contains(&"_from_model_config"));
        Ok(())
    }

    #[test]
    fn serializes_only_set_fields_under_hf_names() -> Result<()> {
        let mut c = parse(
            json!({"early_stopping": "never", "eos_token_id": 2, "_from_model_config": true}),
        )?;
        c.extra.insert("custom".into(), json!([1]));
        let value = serde_json::to_value(&c).map_err(|e| Error::config(e.to_string()))?;
        let expected = json!({"early_stopping": "never", "eos_token_id": 2, "_from_model_config": true, "custom": [1]});
        assert_eq!(value, expected);
        Ok(())
    }

    #[test]
    fn update_replaces_set_fields_only() -> Result<()> {
        let mut merged = parse(json!({"temperature": 0.6, "top_p": 0.9, "eos_token_id": 2}))?;
        merged.extra.insert("custom".into(), json!(1));
        merged.update(&parse(json!({"temperature": 1.2, "max_new_tokens": 8}))?);
        assert_eq!(merged.temperature, Some(1.2));
        assert_eq!(merged.top_p, Some(0.9));
        assert_eq!(merged.max_new_tokens, Some(8));
        assert_eq!(merged.eos_token_id, Some(TokenIds::One(2)));
        assert_eq!(merged.extra.get("custom"), Some(&json!(1)));
        let effective = merged.with_defaults();
        assert_eq!(effective.top_k, Some(50));
        assert_eq!(effective.temperature, Some(1.2));
        assert_eq!(effective.top_p, Some(0.9));
        assert_eq!(
            effective.max_length, None,
            "max_length stays unset: 20 new tokens"
        );
        Ok(())
    }
}
