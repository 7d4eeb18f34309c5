//! One processor from its transformers class name and constructor arguments (JSON), as
//! `lmgen logits --request` and the golden tests use it: `{"name": "TopPLogitsWarper", "args": {"top_p": 0.8}}`.
//!
//! Arguments are transformers' constructor keywords; an unknown one is an error naming it. Processors
//! that need Rust objects (`PrefixConstrainedLogitsProcessor`'s callback, classifier-free guidance's
//! model) cannot be built this way.

use serde_json::{Map, Value};

use super::*;
use crate::error::{Error, Result};
use crate::TokenId;

/// Constructor arguments, consumed one by one so that leftovers can be reported.
struct Args {
    class: String,
    map: Map<String, Value>,
}

impl Args {
    fn err(&self, key: &str, expected: &str, got: &Value) -> Error {
        invalid_arg(format!(
            "{}: argument `{key}` must be {expected}, got {got}",
            self.class
        ))
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn required(&mut self, key: &str) -> Result<Value> {
        self.take(key).ok_or_else(|| {
            invalid_arg(format!("{}: missing required argument `{key}`", self.class))
        })
    }

    fn f64_of(&self, key: &str, v: &Value) -> Result<f64> {
        v.as_f64().ok_or_else(|| self.err(key, "a number", v))
    }

    fn usize_of(&self, key: &str, v: &Value) -> Result<usize> {
        v.as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| self.err(key, "a non-negative integer", v))
    }

    fn f64(&mut self, key: &str) -> Result<f64> {
        let v = self.required(key)?;
        self.f64_of(key, &v)
    }

    fn f64_or(&mut self, key: &str, default: f64) -> Result<f64> {
        match self.take(key) {
            Some(v) => self.f64_of(key, &v),
            None => Ok(default),
        }
    }

    fn usize(&mut self, key: &str) -> Result<usize> {
        let v = self.required(key)?;
        self.usize_of(key, &v)
    }

    fn usize_or(&mut self, key: &str, default: usize) -> Result<usize> {
        match self.take(key) {
            Some(v) => self.usize_of(key, &v),
            None => Ok(default),
        }
    }

    fn opt_usize(&mut self, key: &str) -> Result<Option<usize>> {
        match self.take(key) {
            Some(v) => self.usize_of(key, &v).map(Some),
            None => Ok(None),
        }
    }

    fn ids_of(&self, key: &str, v: &Value) -> Result<Vec<TokenId>> {
        let one = |x: &Value| x.as_u64().and_then(|t| TokenId::try_from(t).ok());
        match v {
            Value::Array(items) => items
                .iter()
                .map(|x| {
                    one(x).ok_or_else(|| self.err(key, "a token id or a list of token ids", v))
                })
                .collect(),
            other => one(other)
                .map(|t| vec![t])
                .ok_or_else(|| self.err(key, "a token id or a list of token ids", v)),
        }
    }

    /// A token id or a list of them; absent -> empty.
    fn ids(&mut self, key: &str) -> Result<Vec<TokenId>> {
        match self.take(key) {
            Some(v) => self.ids_of(key, &v),
            None => Ok(Vec::new()),
        }
    }

    fn id_rows(&mut self, key: &str) -> Result<Vec<Vec<TokenId>>> {
        let v = self.required(key)?;
        let rows = v
            .as_array()
            .ok_or_else(|| self.err(key, "a list of lists of token ids", &v))?;
        rows.iter()
            .map(|r| match r {
                Value::Array(_) => self.ids_of(key, r),
                _ => Err(self.err(key, "a list of lists of token ids", &v)),
            })
            .collect()
    }

    fn finish(self) -> Result<()> {
        match self.map.keys().next() {
            Some(k) => Err(invalid_arg(format!(
                "{}: unknown argument `{k}`",
                self.class
            ))),
            None => Ok(()),
        }
    }
}

/// Builds the processor named `name` (transformers' class name) from its constructor arguments.
pub fn processor_from_hf(name: &str, args: &Value) -> Result<Box<dyn LogitsProcessor>> {
    let map = match args {
        Value::Null => Map::new(),
        Value::Object(m) => m.clone(),
        other => {
            return Err(invalid_arg(format!(
                "{name}: `args` must be a JSON object, got {other}"
            )))
        }
    };
    let mut a = Args {
        class: name.to_string(),
        map,
    };
    // transformers' `filter_value` (always -inf here) and `device` change nothing in lmgen.
    for ignored in ["device", "filter_value"] {
        if let Some(v) = a.take(ignored) {
            if ignored == "filter_value" && v.as_f64().is_some() {
                return Err(Error::unsupported(format!(
                    "{name}: a finite `filter_value` (lmgen always filters with -inf)"
                )));
            }
        }
    }
    let p: Box<dyn LogitsProcessor> = match name {
        "TemperatureLogitsWarper" => Box::new(TemperatureLogitsWarper::new(a.f64("temperature")?)?),
        "TopKLogitsWarper" => {
            let k = a.usize("top_k")?;
            Box::new(TopKLogitsWarper::new(
                k,
                a.usize_or("min_tokens_to_keep", 1)?,
            )?)
        }
        "TopPLogitsWarper" => {
            let p = a.f64("top_p")?;
            Box::new(TopPLogitsWarper::new(
                p,
                a.usize_or("min_tokens_to_keep", 1)?,
            )?)
        }
        "MinPLogitsWarper" => {
            let p = a.f64("min_p")?;
            Box::new(MinPLogitsWarper::new(
                p,
                a.usize_or("min_tokens_to_keep", 1)?,
            )?)
        }
        "TypicalLogitsWarper" => {
            let m = a.f64_or("mass", 0.9)?;
            Box::new(TypicalLogitsWarper::new(
                m,
                a.usize_or("min_tokens_to_keep", 1)?,
            )?)
        }
        "EpsilonLogitsWarper" => {
            let e = a.f64("epsilon")?;
            Box::new(EpsilonLogitsWarper::new(
                e,
                a.usize_or("min_tokens_to_keep", 1)?,
            )?)
        }
        "EtaLogitsWarper" => {
            let e = a.f64("epsilon")?;
            Box::new(EtaLogitsWarper::new(
                e,
                a.usize_or("min_tokens_to_keep", 1)?,
            )?)
        }
        "TopHLogitsWarper" => Box::new(TopHLogitsWarper::new(a.f64("top_h")?)?),
        "RepetitionPenaltyLogitsProcessor" => {
            let p = a.f64("penalty")?;
            Box::new(RepetitionPenaltyLogitsProcessor::new(
                p,
                a.opt_usize("prompt_ignore_length")?,
            )?)
        }
        "EncoderRepetitionPenaltyLogitsProcessor" => {
            let p = a.f64("penalty")?;
            Box::new(EncoderRepetitionPenaltyLogitsProcessor::new(
                p,
                a.id_rows("encoder_input_ids")?,
            )?)
        }
        "NoRepeatNGramLogitsProcessor" => {
            Box::new(NoRepeatNGramLogitsProcessor::new(a.usize("ngram_size")?)?)
        }
        "EncoderNoRepeatNGramLogitsProcessor" => {
            let n = a.usize("encoder_ngram_size")?;
            Box::new(EncoderNoRepeatNGramLogitsProcessor::new(
                n,
                &a.id_rows("encoder_input_ids")?,
            )?)
        }
        "NoBadWordsLogitsProcessor" => {
            let bad = a.id_rows("bad_words_ids")?;
            Box::new(NoBadWordsLogitsProcessor::new(
                bad,
                &a.ids("eos_token_id")?,
            )?)
        }
        "SequenceBiasLogitsProcessor" => {
            let v = a.required("sequence_bias")?;
            let pairs: Vec<(Vec<TokenId>, f64)> = serde_json::from_value(v.clone())
                .map_err(|_| a.err("sequence_bias", "a list of [[token ids], bias] pairs", &v))?;
            Box::new(SequenceBiasLogitsProcessor::new(pairs)?)
        }
        "MinLengthLogitsProcessor" => {
            let n = a.usize("min_length")?;
            Box::new(MinLengthLogitsProcessor::new(n, a.ids("eos_token_id")?))
        }
        "MinNewTokensLengthLogitsProcessor" => {
            let skip = a.usize("prompt_length_to_skip")?;
            let n = a.usize("min_new_tokens")?;
            Box::new(MinNewTokensLengthLogitsProcessor::new(
                skip,
                n,
                a.ids("eos_token_id")?,
            ))
        }
        "ForcedBOSTokenLogitsProcessor" => {
            let v = a.required("bos_token_id")?;
            let ids = a.ids_of("bos_token_id", &v)?;
            match ids.as_slice() {
                [bos] => Box::new(ForcedBOSTokenLogitsProcessor::new(*bos)),
                _ => return Err(a.err("bos_token_id", "one token id", &v)),
            }
        }
        "ForcedEOSTokenLogitsProcessor" => {
            let n = a.usize("max_length")?;
            Box::new(ForcedEOSTokenLogitsProcessor::new(
                n,
                a.ids("eos_token_id")?,
            ))
        }
        "ExponentialDecayLengthPenalty" => {
            let v = a.required("exponential_decay_length_penalty")?;
            let (start, factor): (usize, f64) =
                serde_json::from_value(v.clone()).map_err(|_| {
                    a.err(
                        "exponential_decay_length_penalty",
                        "[start_index, decay_factor]",
                        &v,
                    )
                })?;
            let eos = a.ids("eos_token_id")?;
            Box::new(ExponentialDecayLengthPenalty::new(
                (start, factor),
                eos,
                a.usize("input_ids_seq_length")?,
            ))
        }
        "LogitNormalization" => Box::new(LogitNormalization),
        "InfNanRemoveLogitsProcessor" => Box::new(InfNanRemoveLogitsProcessor),
        "SuppressTokensLogitsProcessor" => Box::new(SuppressTokensLogitsProcessor::new(
            a.ids("suppress_tokens")?,
        )),
        "SuppressTokensAtBeginLogitsProcessor" => {
            let t = a.ids("begin_suppress_tokens")?;
            Box::new(SuppressTokensAtBeginLogitsProcessor::new(
                t,
                a.usize("begin_index")?,
            ))
        }
        "PresencePenaltyLogitsProcessor" => {
            let p = a.f64("presence_penalty")?;
            Box::new(PresencePenaltyLogitsProcessor::new(
                p,
                a.usize_or("prompt_length", 0)?,
            )?)
        }
        "FrequencyPenaltyLogitsProcessor" => {
            let p = a.f64("frequency_penalty")?;
            Box::new(FrequencyPenaltyLogitsProcessor::new(
                p,
                a.usize_or("prompt_length", 0)?,
            )?)
        }
        "LogitBiasLogitsProcessor" => {
            let v = a.required("logit_bias")?;
            let map: std::collections::BTreeMap<TokenId, f64> =
                serde_json::from_value(v.clone())
                    .map_err(|_| a.err("logit_bias", "an object of token id -> bias", &v))?;
            Box::new(LogitBiasLogitsProcessor::new(map)?)
        }
        "WatermarkLogitsProcessor" => {
            let vocab = a.usize("vocab_size")?;
            let config = WatermarkingConfig::from_json(&Value::Object(std::mem::take(&mut a.map)))?;
            Box::new(WatermarkLogitsProcessor::new(config, vocab)?)
        }
        "PrefixConstrainedLogitsProcessor" | "UnbatchedClassifierFreeGuidanceLogitsProcessor" => {
            return Err(Error::unsupported(format!(
                "{name} needs a Rust callback or the model; build it with the library API"
            )))
        }
        other => {
            return Err(Error::unsupported(format!(
                "unknown or unsupported logits processor `{other}`"
            )))
        }
    };
    a.finish()?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_by_name_and_names_bad_arguments() {
        let p = processor_from_hf("TopKLogitsWarper", &json!({"top_k": 1})).unwrap();
        let mut s = Scores::new(vec![1.0, 2.0], 1, 2);
        p.process(&[vec![]], &mut s).unwrap();
        assert_eq!(s.data, vec![f32::NEG_INFINITY, 2.0]);
        let e = processor_from_hf("TopPLogitsWarper", &json!({"top_p": 1.5}))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("`top_p` has to be a float > 0 and < 1, but is 1.5"),
            "{e}"
        );
        let e = processor_from_hf("TopKLogitsWarper", &json!({"top_k": 1, "k": 2}))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown argument `k`"), "{e}");
        assert!(processor_from_hf("NoSuchWarper", &json!({})).is_err());
    }
}
