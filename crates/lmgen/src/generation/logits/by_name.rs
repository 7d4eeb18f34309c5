//! One processor from its transformers class name and constructor arguments (JSON), as
//! `lmgen logits --request` and the golden tests use it: `{"name": "TopPLogitsWarper", "args": {"top_p": 0.8}}`.
//!
//! Each class reads its arguments into its own struct: transformers' constructor keywords and
//! defaults, an unknown keyword refused. A mistyped or missing argument is an error naming the class
//! and the argument's path (`TopPLogitsWarper: `top_p` must be a number, got "x"`); ranges are
//! checked by the processors' constructors, as transformers checks them in `__init__`. Processors
//! that need Rust objects (`PrefixConstrainedLogitsProcessor`'s callback, classifier-free
//! guidance's model) cannot be built this way.

use std::collections::BTreeMap;

use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::*;
use crate::error::{Error, Result};
use crate::models::config::describe;
use crate::TokenId;

/// A token id or a list of them (transformers' `Union[int, list[int]]`); absent is empty.
#[derive(Debug, Default)]
struct TokenIds(Vec<TokenId>);

impl<'de> Deserialize<'de> for TokenIds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ids;
        impl<'de> Visitor<'de> for Ids {
            type Value = TokenIds;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a token id or a list of token ids")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TokenIds, E> {
                TokenId::try_from(v)
                    .map(|id| TokenIds(vec![id]))
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TokenIds, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element::<TokenId>()? {
                    ids.push(id);
                }
                Ok(TokenIds(ids))
            }
        }
        deserializer.deserialize_any(Ids)
    }
}

fn one() -> usize {
    1
}

/// Arguments that build one processor class.
trait Build: DeserializeOwned {
    fn build(self) -> Result<Box<dyn LogitsProcessor>>;
}

/// `class`'s arguments read into `A`; an error names the class and the argument.
fn read<A: DeserializeOwned>(class: &str, args: Map<String, Value>) -> Result<A> {
    serde_path_to_error::deserialize(Value::Object(args)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        match message.strip_prefix("unknown field ") {
            Some(rest) => invalid_arg(format!("{class}: unknown argument {rest}")),
            None => invalid_arg(format!("{class}: {}", describe("", &path, &message))),
        }
    })
}

/// `class(**args)`: the arguments read into `A`, then the processor built.
fn make<A: Build>(class: &str, args: Map<String, Value>) -> Result<Box<dyn LogitsProcessor>> {
    read::<A>(class, args)?.build()
}

/// Declares one class's argument struct (transformers' keywords; `= default` where it has one)
/// and how it builds the processor.
macro_rules! class {
    ($args:ident { $($field:ident : $ty:ty $(= $default:literal)?),* $(,)? } => |$a:ident| $build:expr) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $args {
            $( $(#[serde(default = $default)])? $field: $ty, )*
        }
        impl Build for $args {
            fn build(self) -> Result<Box<dyn LogitsProcessor>> {
                let $a = self;
                Ok(Box::new($build))
            }
        }
    };
}

class! {
    Temperature { temperature: f64 }
    => |a| TemperatureLogitsWarper::new(a.temperature)?
}
class! {
    TopK { top_k: usize, min_tokens_to_keep: usize = "one" }
    => |a| TopKLogitsWarper::new(a.top_k, a.min_tokens_to_keep)?
}
class! {
    TopP { top_p: f64, min_tokens_to_keep: usize = "one" }
    => |a| TopPLogitsWarper::new(a.top_p, a.min_tokens_to_keep)?
}
class! {
    MinP { min_p: f64, min_tokens_to_keep: usize = "one" }
    => |a| MinPLogitsWarper::new(a.min_p, a.min_tokens_to_keep)?
}
class! {
    Typical { mass: f64 = "typical_mass", min_tokens_to_keep: usize = "one" }
    => |a| TypicalLogitsWarper::new(a.mass, a.min_tokens_to_keep)?
}
class! {
    Epsilon { epsilon: f64, min_tokens_to_keep: usize = "one" }
    => |a| EpsilonLogitsWarper::new(a.epsilon, a.min_tokens_to_keep)?
}
class! {
    Eta { epsilon: f64, min_tokens_to_keep: usize = "one" }
    => |a| EtaLogitsWarper::new(a.epsilon, a.min_tokens_to_keep)?
}
class! {
    TopH { top_h: f64 }
    => |a| TopHLogitsWarper::new(a.top_h)?
}
class! {
    RepetitionPenalty { penalty: f64, prompt_ignore_length: Option<usize> = "Default::default" }
    => |a| RepetitionPenaltyLogitsProcessor::new(a.penalty, a.prompt_ignore_length)?
}
class! {
    EncoderRepetitionPenalty { penalty: f64, encoder_input_ids: Vec<Vec<TokenId>> }
    => |a| EncoderRepetitionPenaltyLogitsProcessor::new(a.penalty, a.encoder_input_ids)?
}
class! {
    NoRepeatNGram { ngram_size: usize }
    => |a| NoRepeatNGramLogitsProcessor::new(a.ngram_size)?
}
class! {
    EncoderNoRepeatNGram { encoder_ngram_size: usize, encoder_input_ids: Vec<Vec<TokenId>> }
    => |a| EncoderNoRepeatNGramLogitsProcessor::new(a.encoder_ngram_size, &a.encoder_input_ids)?
}
class! {
    NoBadWords { bad_words_ids: Vec<Vec<TokenId>>, eos_token_id: TokenIds = "Default::default" }
    => |a| NoBadWordsLogitsProcessor::new(a.bad_words_ids, &a.eos_token_id.0)?
}
class! {
    SequenceBias { sequence_bias: Vec<(Vec<TokenId>, f64)> }
    => |a| SequenceBiasLogitsProcessor::new(a.sequence_bias)?
}
class! {
    MinLength { min_length: usize, eos_token_id: TokenIds = "Default::default" }
    => |a| MinLengthLogitsProcessor::new(a.min_length, a.eos_token_id.0)
}
class! {
    MinNewTokensLength {
        prompt_length_to_skip: usize,
        min_new_tokens: usize,
        eos_token_id: TokenIds = "Default::default",
    }
    => |a| MinNewTokensLengthLogitsProcessor::new(
        a.prompt_length_to_skip,
        a.min_new_tokens,
        a.eos_token_id.0,
    )
}
class! {
    ForcedBos { bos_token_id: TokenIds }
    => |a| match a.bos_token_id.0.as_slice() {
        [bos] => ForcedBOSTokenLogitsProcessor::new(*bos),
        ids => {
            return Err(invalid_arg(format!(
                "ForcedBOSTokenLogitsProcessor: `bos_token_id` must be one token id, got {ids:?}"
            )));
        }
    }
}
class! {
    ForcedEos { max_length: usize, eos_token_id: TokenIds = "Default::default" }
    => |a| ForcedEOSTokenLogitsProcessor::new(a.max_length, a.eos_token_id.0)
}
class! {
    ExponentialDecay {
        exponential_decay_length_penalty: (usize, f64),
        eos_token_id: TokenIds = "Default::default",
        input_ids_seq_length: usize,
    }
    => |a| ExponentialDecayLengthPenalty::new(
        a.exponential_decay_length_penalty,
        a.eos_token_id.0,
        a.input_ids_seq_length,
    )
}
class! {
    SuppressTokens { suppress_tokens: TokenIds = "Default::default" }
    => |a| SuppressTokensLogitsProcessor::new(a.suppress_tokens.0)
}
class! {
    SuppressTokensAtBegin { begin_suppress_tokens: TokenIds = "Default::default", begin_index: usize }
    => |a| SuppressTokensAtBeginLogitsProcessor::new(a.begin_suppress_tokens.0, a.begin_index)
}
class! {
    PresencePenalty { presence_penalty: f64, prompt_length: usize = "Default::default" }
    => |a| PresencePenaltyLogitsProcessor::new(a.presence_penalty, a.prompt_length)?
}
class! {
    FrequencyPenalty { frequency_penalty: f64, prompt_length: usize = "Default::default" }
    => |a| FrequencyPenaltyLogitsProcessor::new(a.frequency_penalty, a.prompt_length)?
}
class! {
    LogitBias { logit_bias: BTreeMap<TokenId, f64> }
    => |a| LogitBiasLogitsProcessor::new(a.logit_bias)?
}
class! {
    Watermark {
        vocab_size: usize,
        greenlist_ratio: f64 = "watermark::greenlist_ratio",
        bias: f64 = "watermark::bias",
        hashing_key: u64 = "watermark::hashing_key",
        seeding_scheme: Value = "watermark::seeding_scheme",
        context_width: usize = "one",
    }
    => |a| {
        let config = WatermarkingConfig {
            greenlist_ratio: a.greenlist_ratio,
            bias: a.bias,
            hashing_key: a.hashing_key,
            seeding_scheme: SeedingScheme::from_json(&a.seeding_scheme)?,
            context_width: a.context_width,
        };
        config.validate()?;
        WatermarkLogitsProcessor::new(config, a.vocab_size)?
    }
}

class! {
    SynthId {
        ngram_len: usize,
        keys: Vec<i64>,
        sampling_table_size: usize,
        sampling_table_seed: i64,
        context_history_size: usize,
        skip_first_ngram_calls: bool = "Default::default",
        debug_mode: bool = "Default::default",
    }
    => |a| {
        // torch's `manual_seed` takes a negative seed modulo 2**64.
        let config = SynthIDTextWatermarkingConfig {
            ngram_len: a.ngram_len,
            keys: a.keys,
            context_history_size: a.context_history_size,
            sampling_table_seed: a.sampling_table_seed as u64,
            sampling_table_size: a.sampling_table_size,
            skip_first_ngram_calls: a.skip_first_ngram_calls,
            debug_mode: a.debug_mode,
        };
        SynthIDTextWatermarkLogitsProcessor::new(config)?
    }
}

fn typical_mass() -> f64 {
    0.9
}

/// transformers' `WatermarkLogitsProcessor` defaults (those of `WatermarkingConfig`).
mod watermark {
    use super::{Value, WatermarkingConfig};

    pub fn greenlist_ratio() -> f64 {
        WatermarkingConfig::default().greenlist_ratio
    }
    pub fn bias() -> f64 {
        WatermarkingConfig::default().bias
    }
    pub fn hashing_key() -> u64 {
        WatermarkingConfig::default().hashing_key
    }
    pub fn seeding_scheme() -> Value {
        Value::from("lefthash")
    }
}

/// `LogitNormalization()` and `InfNanRemoveLogitsProcessor()`: no arguments.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// Builds the processor named `name` (transformers' class name) from its constructor arguments.
pub fn processor_from_hf(name: &str, args: &Value) -> Result<Box<dyn LogitsProcessor>> {
    let mut map = match args {
        Value::Null => Map::new(),
        Value::Object(m) => m.clone(),
        other => {
            return Err(invalid_arg(format!(
                "{name}: `args` must be a JSON object, got {other}"
            )))
        }
    };
    // `None` is the keyword's default, as an absent one.
    map.retain(|_, v| !v.is_null());
    // transformers' `filter_value` (always -inf here) and `device` change nothing in lmgen.
    map.remove("device");
    if let Some(v) = map.remove("filter_value") {
        if v.as_f64().is_some() {
            return Err(Error::unsupported(format!(
                "{name}: a finite `filter_value` (lmgen always filters with -inf)"
            )));
        }
    }
    match name {
        "TemperatureLogitsWarper" => make::<Temperature>(name, map),
        "TopKLogitsWarper" => make::<TopK>(name, map),
        "TopPLogitsWarper" => make::<TopP>(name, map),
        "MinPLogitsWarper" => make::<MinP>(name, map),
        "TypicalLogitsWarper" => make::<Typical>(name, map),
        "EpsilonLogitsWarper" => make::<Epsilon>(name, map),
        "EtaLogitsWarper" => make::<Eta>(name, map),
        "TopHLogitsWarper" => make::<TopH>(name, map),
        "RepetitionPenaltyLogitsProcessor" => make::<RepetitionPenalty>(name, map),
        "EncoderRepetitionPenaltyLogitsProcessor" => make::<EncoderRepetitionPenalty>(name, map),
        "NoRepeatNGramLogitsProcessor" => make::<NoRepeatNGram>(name, map),
        "EncoderNoRepeatNGramLogitsProcessor" => make::<EncoderNoRepeatNGram>(name, map),
        "NoBadWordsLogitsProcessor" => make::<NoBadWords>(name, map),
        "SequenceBiasLogitsProcessor" => make::<SequenceBias>(name, map),
        "MinLengthLogitsProcessor" => make::<MinLength>(name, map),
        "MinNewTokensLengthLogitsProcessor" => make::<MinNewTokensLength>(name, map),
        "ForcedBOSTokenLogitsProcessor" => make::<ForcedBos>(name, map),
        "ForcedEOSTokenLogitsProcessor" => make::<ForcedEos>(name, map),
        "ExponentialDecayLengthPenalty" => make::<ExponentialDecay>(name, map),
        "LogitNormalization" => {
            read::<NoArgs>(name, map)?;
            Ok(Box::new(LogitNormalization))
        }
        "InfNanRemoveLogitsProcessor" => {
            read::<NoArgs>(name, map)?;
            Ok(Box::new(InfNanRemoveLogitsProcessor))
        }
        "SuppressTokensLogitsProcessor" => make::<SuppressTokens>(name, map),
        "SuppressTokensAtBeginLogitsProcessor" => make::<SuppressTokensAtBegin>(name, map),
        "PresencePenaltyLogitsProcessor" => make::<PresencePenalty>(name, map),
        "FrequencyPenaltyLogitsProcessor" => make::<FrequencyPenalty>(name, map),
        "LogitBiasLogitsProcessor" => make::<LogitBias>(name, map),
        "WatermarkLogitsProcessor" => make::<Watermark>(name, map),
        "SynthIDTextWatermarkLogitsProcessor" => make::<SynthId>(name, map),
        "PrefixConstrainedLogitsProcessor" | "UnbatchedClassifierFreeGuidanceLogitsProcessor" => {
            Err(Error::unsupported(format!(
                "{name} needs a Rust callback or the model; build it with the library API"
            )))
        }
        other => Err(Error::unsupported(format!(
            "unknown or unsupported logits processor `{other}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(name: &str, args: Value) -> String {
        processor_from_hf(name, &args)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn builds_by_name_and_names_bad_arguments() {
        let p = processor_from_hf("TopKLogitsWarper", &json!({"top_k": 1})).unwrap();
        let mut s = Scores::new(vec![1.0, 2.0], 1, 2);
        p.process(&[vec![]], &mut s).unwrap();
        assert_eq!(s.data, vec![f32::NEG_INFINITY, 2.0]);
        let e = message("TopPLogitsWarper", json!({"top_p": 1.5}));
        assert!(
            e.contains("`top_p` has to be a float > 0 and < 1, but is 1.5"),
            "{e}"
        );
        let e = message("TopKLogitsWarper", json!({"top_k": 1, "k": 2}));
        assert!(e.contains("unknown argument `k`"), "{e}");
        assert!(e.contains("`top_k`"), "{e}");
        assert!(processor_from_hf("NoSuchWarper", &json!({})).is_err());
    }

    #[test]
    fn errors_name_the_class_and_the_argument() {
        for (name, args, want) in [
            (
                "TopPLogitsWarper",
                json!({"top_p": "x"}),
                "TopPLogitsWarper: `top_p` must be a number, got \"x\"",
            ),
            (
                "TopKLogitsWarper",
                json!({"top_k": -1}),
                "TopKLogitsWarper: `top_k` must be a non-negative integer, got -1",
            ),
            (
                "TemperatureLogitsWarper",
                json!({}),
                "TemperatureLogitsWarper: `temperature` is missing",
            ),
            (
                "MinLengthLogitsProcessor",
                json!({"min_length": 2, "eos_token_id": "x"}),
                "MinLengthLogitsProcessor: `eos_token_id` must be a token id or a list of token ids, got \"x\"",
            ),
            (
                "NoBadWordsLogitsProcessor",
                json!({"bad_words_ids": [[1], [2, "x"]]}),
                "NoBadWordsLogitsProcessor: `bad_words_ids[1][1]` must be a non-negative integer",
            ),
            (
                "ForcedBOSTokenLogitsProcessor",
                json!({"bos_token_id": [1, 2]}),
                "`bos_token_id` must be one token id, got [1, 2]",
            ),
            (
                "LogitNormalization",
                json!({"x": 1}),
                "LogitNormalization: unknown argument `x`",
            ),
            (
                "WatermarkLogitsProcessor",
                json!({"vocab_size": 50, "seeding_scheme": "x"}),
                "`seeding_scheme` should be one of ['selfhash', 'lefthash']",
            ),
        ] {
            let e = message(name, args);
            assert!(e.contains(want), "{name}: {e}");
        }
        let e = processor_from_hf("TopPLogitsWarper", &json!({"top_p": "x"})).err();
        assert_eq!(e.as_ref().and_then(Error::field), Some("top_p"));
    }

    #[test]
    fn defaults_and_nulls_are_transformers() {
        // `mass` defaults to 0.9, `min_tokens_to_keep` to 1; `None` is the default.
        assert!(
            processor_from_hf("TypicalLogitsWarper", &json!({"min_tokens_to_keep": null})).is_ok()
        );
        assert!(processor_from_hf(
            "RepetitionPenaltyLogitsProcessor",
            &json!({"penalty": 1.2, "prompt_ignore_length": null})
        )
        .is_ok());
        assert!(processor_from_hf(
            "MinLengthLogitsProcessor",
            &json!({"min_length": 2, "eos_token_id": [1, 2], "device": "cpu"})
        )
        .is_ok());
        let e = message(
            "TopKLogitsWarper",
            json!({"top_k": 2, "filter_value": -5.0}),
        );
        assert!(e.contains("finite `filter_value`"), "{e}");
    }
}
