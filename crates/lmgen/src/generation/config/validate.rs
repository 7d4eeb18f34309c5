//! `GenerationConfig::validate`: the settings transformers refuses with an error.
//!
//! Mirrors the hard errors of `GenerationConfig.validate` (`src/transformers/generation/configuration_utils.py`)
//! and of the logits processors' constructors as `_get_logits_processor` builds them
//! (`src/transformers/generation/utils.py`, `logits_process.py`): a processor's range check applies only
//! when transformers would build that processor. Combinations transformers only warns about (sampling
//! settings while not sampling, beam settings with one beam, ...) pass.
//!
//! Checks of group and constrained beam search follow transformers 4's `validate`, as transformers 5
//! moved those modes to Hub repositories. Not mirrored: `TemperatureLogitsWarper` and
//! `TemperatureLogitsWarper` rejecting a Python `int` (lmgen reads numbers as floats; an integer
//! `repetition_penalty` is rejected at parse time).
//!
//! Deliberately stricter than transformers: while sampling, `top_p` or `typical_p` above 1 and
//! `epsilon_cutoff` / `eta_cutoff` outside [0, 1) are errors. transformers silently builds no
//! processor for those values, which hides a typo such as `top_p: 9`.

use super::{GenerationConfig, GenerationMode};
use crate::error::{Error, Result};

/// Valid `cache_implementation` values (`ALL_CACHE_IMPLEMENTATIONS` plus `"paged"`).
const CACHE_IMPLEMENTATIONS: &[&str] = &[
    "static",
    "offloaded_static",
    "sliding_window",
    "hybrid",
    "hybrid_chunked",
    "offloaded_hybrid",
    "offloaded_hybrid_chunked",
    "dynamic",
    "offloaded",
    "quantized",
    "paged",
];

/// `generate()` arguments that transformers refuses inside a generation config.
const GENERATE_ARGUMENTS: &[&str] = &[
    "logits_processor",
    "stopping_criteria",
    "prefix_allowed_tokens_fn",
    "synced_gpus",
    "assistant_model",
    "streamer",
    "negative_prompt_ids",
    "negative_prompt_attention_mask",
];

fn invalid(message: String) -> Result<()> {
    Err(Error::config(message))
}

impl GenerationConfig {
    /// Checks the values in effect (this config with the global defaults for unset fields); the first
    /// problem is an [`Error::GenerationConfig`] naming the field. Call it on the merged config.
    pub fn validate(&self) -> Result<()> {
        let c = self.with_defaults();
        c.validate_fields()?;
        c.validate_beams()?;
        c.validate_dola()?;
        c.validate_contrastive()?;
        c.validate_processors()
    }

    /// `GenerationConfig.validate`'s checks of single fields and of `num_return_sequences`.
    fn validate_fields(&self) -> Result<()> {
        if self.max_new_tokens == Some(0) {
            return invalid("`max_new_tokens` must be greater than 0, got 0".into());
        }
        if let Some(cache) = &self.cache_implementation {
            if !CACHE_IMPLEMENTATIONS.contains(&cache.as_str()) {
                return invalid(format!(
                    "`cache_implementation` must be one of {}, got {cache:?}",
                    quoted(CACHE_IMPLEMENTATIONS)
                ));
            }
        }
        if let Some(weight) = self.assistant_ensemble_weight {
            if !(weight > 0.0 && weight < 1.0) {
                return invalid(format!(
                    "`assistant_ensemble_weight` must be in (0, 1), got {weight}; \
                     leave it unset for standard (lossless) speculative decoding"
                ));
            }
        }
        let num_beams = self.num_beams.unwrap_or(1);
        let num_return_sequences = self.num_return_sequences.unwrap_or(1);
        if num_return_sequences > 1 {
            if num_beams == 1 && self.do_sample != Some(true) {
                return invalid(format!(
                    "`num_return_sequences` must be 1 with greedy decoding (`num_beams=1`, \
                     `do_sample=false`), got {num_return_sequences}"
                ));
            }
            if num_beams > 1 && num_return_sequences > num_beams {
                return invalid(format!(
                    "`num_return_sequences` ({num_return_sequences}) must be <= `num_beams` ({num_beams})"
                ));
            }
        }
        if let Some(suppressed) = &self.suppress_tokens {
            let forced = [
                ("forced_bos_token_id", self.forced_bos_token_id.as_slice()),
                (
                    "forced_eos_token_id",
                    self.forced_eos_token_id
                        .as_ref()
                        .map_or(&[][..], |ids| ids.as_slice()),
                ),
            ];
            for (field, ids) in forced {
                if !ids.is_empty() && ids.iter().all(|id| suppressed.contains(id)) {
                    return invalid(format!(
                        "every token in `{field}` ({ids:?}) is also in `suppress_tokens`; forcing a token \
                         while suppressing it makes every logit -inf. Remove the overlap (to prevent an \
                         early EOS, use `min_new_tokens`)"
                    ));
                }
            }
        }
        if let Some(key) = GENERATE_ARGUMENTS
            .iter()
            .find(|key| self.extra.contains_key(**key))
        {
            return invalid(format!(
                "`{key}` is not a generation config field; pass it to `generate()` directly"
            ));
        }
        Ok(())
    }

    /// Settings constrained beam search refuses (transformers 4's `validate`); `field` names what
    /// set the constraints.
    pub(crate) fn validate_constraints(&self, field: &str) -> Result<()> {
        let groups = self.num_beam_groups.unwrap_or(1);
        if self.do_sample == Some(true) {
            return invalid(format!(
                "`{field}` (constrained beam search) is incompatible with `do_sample=true`"
            ));
        }
        if groups > 1 {
            return invalid(format!(
                "`{field}` (constrained beam search) is incompatible with `num_beam_groups` ({groups}) > 1"
            ));
        }
        Ok(())
    }

    /// Beam settings refused by transformers (4's `validate` for group and constrained beam search).
    fn validate_beams(&self) -> Result<()> {
        let num_beams = self.num_beams.unwrap_or(1);
        if num_beams == 0 {
            return invalid("`num_beams` must be at least 1, got 0".into());
        }
        let do_sample = self.do_sample == Some(true);
        let groups = self.num_beam_groups.unwrap_or(1);
        if num_beams > 1 && groups > 1 {
            if do_sample {
                return invalid(format!(
                    "`num_beam_groups` ({groups}) > 1 (diverse beam search) is incompatible with `do_sample=true`"
                ));
            }
            if groups > num_beams {
                return invalid(format!(
                    "`num_beam_groups` ({groups}) must be <= `num_beams` ({num_beams})"
                ));
            }
            if !num_beams.is_multiple_of(groups) {
                return invalid(format!(
                    "`num_beams` ({num_beams}) must be divisible by `num_beam_groups` ({groups})"
                ));
            }
            if self.diversity_penalty.unwrap_or(0.0) == 0.0 {
                return invalid(format!(
                    "`diversity_penalty` should be greater than `0.0` with `num_beam_groups` ({groups}) > 1, \
                     otherwise the groups will be identical"
                ));
            }
        }
        if let Some(penalty) = self.diversity_penalty.filter(|p| *p != 0.0) {
            if groups < 2 && num_beams > 1 {
                return invalid(format!(
                    "`diversity_penalty` ({penalty}) is only used by diverse beam search: set \
                     `num_beam_groups` > 1 (dividing `num_beams`), or unset `diversity_penalty`"
                ));
            }
        }
        if self.constraints.is_some() || self.force_words_ids.is_some() {
            let field = if self.constraints.is_some() {
                "constraints"
            } else {
                "force_words_ids"
            };
            self.validate_constraints(field)?;
        }
        let beam_mode = matches!(
            self.mode(false),
            GenerationMode::BeamSearch | GenerationMode::BeamSample
        );
        if beam_mode && self.low_memory == Some(true) {
            return invalid(
                "`low_memory=true` is not supported by beam search (removed in transformers 5's beam \
                 search refactor); unset it"
                    .into(),
            );
        }
        Ok(())
    }

    /// transformers 4.47's `generate()` refuses contrastive search without the KV cache.
    fn validate_contrastive(&self) -> Result<()> {
        if self.mode(false) == GenerationMode::ContrastiveSearch && self.use_cache == Some(false) {
            return invalid(
                "contrastive search (`penalty_alpha` > 0 with `top_k` > 1) requires `use_cache=true`"
                    .into(),
            );
        }
        Ok(())
    }

    /// The range checks of the logits processors transformers would build for this config.
    fn validate_processors(&self) -> Result<()> {
        if let Some(penalty) = self.repetition_penalty.filter(|p| *p != 1.0) {
            if penalty.is_nan() || penalty <= 0.0 {
                return invalid(format!(
                    "`repetition_penalty` has to be a strictly positive float, got {penalty}"
                ));
            }
        }
        if let Some(bad_words) = &self.bad_words_ids {
            if bad_words.is_empty() || bad_words.iter().any(Vec::is_empty) {
                return invalid(format!(
                    "`bad_words_ids` must be a non-empty list of non-empty lists of token ids, got {bad_words:?}"
                ));
            }
        }
        if let Some(bias) = &self.sequence_bias {
            if bias.is_empty() || bias.iter().any(|(ids, _)| ids.is_empty()) {
                return invalid(
                    "`sequence_bias` must be a non-empty list of `[[token ids], bias]` pairs with \
                     non-empty token ids"
                        .into(),
                );
            }
        }
        if self.do_sample == Some(true) {
            self.validate_warpers()?;
        }
        Ok(())
    }

    /// The sampling warpers' checks (`TemperatureLogitsWarper`, `TopHLogitsWarper`, `TopPLogitsWarper`,
    /// `MinPLogitsWarper`, `TypicalLogitsWarper`), each only where transformers builds the warper.
    fn validate_warpers(&self) -> Result<()> {
        if let Some(temperature) = self.temperature.filter(|t| *t != 1.0) {
            if temperature.is_nan() || temperature <= 0.0 {
                return invalid(format!(
                    "`temperature` has to be a strictly positive float, got {temperature}; for greedy \
                     decoding, set `do_sample` to false"
                ));
            }
        }
        if let Some(top_h) = self.top_h {
            if !(top_h > 0.0 && top_h <= 1.0) {
                return invalid(format!("`top_h` must be in (0, 1], got {top_h}"));
            }
        }
        if let Some(top_p) = self.top_p {
            if !(0.0..=1.0).contains(&top_p) {
                return invalid(format!("`top_p` must be in [0, 1], got {top_p}"));
            }
        }
        for (field, value) in [
            ("epsilon_cutoff", self.epsilon_cutoff),
            ("eta_cutoff", self.eta_cutoff),
        ] {
            if let Some(v) = value.filter(|v| !(0.0..1.0).contains(v)) {
                return invalid(format!("`{field}` must be in [0, 1), got {v}"));
            }
        }
        if let Some(min_p) = self.min_p {
            if !(0.0..=1.0).contains(&min_p) {
                return invalid(format!("`min_p` must be in [0, 1], got {min_p}"));
            }
        }
        if let Some(typical_p) = self.typical_p {
            if !(typical_p > 0.0 && typical_p <= 1.0) {
                return invalid(format!("`typical_p` must be in (0, 1], got {typical_p}"));
            }
        }
        Ok(())
    }
}

fn quoted(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::UnknownFields;
    use super::*;

    fn check(value: Value) -> Result<()> {
        GenerationConfig::from_json(&value, UnknownFields::Keep)?.validate()
    }

    fn assert_invalid(value: Value, expected: &str) {
        match check(value.clone()) {
            Err(Error::GenerationConfig { message, .. }) => {
                assert!(message.contains(expected), "{value}: {message}")
            }
            other => panic!("{value}: expected an error containing {expected:?}, got {other:?}"),
        }
    }

    #[test]
    fn generation_config_validate_errors() {
        assert_invalid(
            json!({"max_new_tokens": 0}),
            "`max_new_tokens` must be greater than 0",
        );
        assert_invalid(
            json!({"cache_implementation": "big"}),
            "`cache_implementation` must be one of",
        );
        assert_invalid(
            json!({"assistant_ensemble_weight": 1.0}),
            "`assistant_ensemble_weight` must be in (0, 1)",
        );
        assert_invalid(
            json!({"num_return_sequences": 2}),
            "`num_return_sequences` must be 1 with greedy",
        );
        assert_invalid(
            json!({"num_return_sequences": 5, "num_beams": 4}),
            "must be <= `num_beams` (4)",
        );
        assert_invalid(
            json!({"suppress_tokens": [1, 2, 3], "forced_eos_token_id": [2, 3]}),
            "every token in `forced_eos_token_id` ([2, 3]) is also in `suppress_tokens`",
        );
        assert_invalid(
            json!({"suppress_tokens": [5], "forced_bos_token_id": 5}),
            "`forced_bos_token_id`",
        );
        assert_invalid(
            json!({"streamer": "stdout"}),
            "`streamer` is not a generation config field",
        );
    }

    #[test]
    fn beam_errors() {
        assert_invalid(json!({"num_beams": 0}), "`num_beams` must be at least 1");
        let groups = json!({"num_beams": 4, "num_beam_groups": 8, "diversity_penalty": 1.0});
        assert_invalid(groups, "`num_beam_groups` (8) must be <= `num_beams` (4)");
        let groups = json!({"num_beams": 5, "num_beam_groups": 2, "diversity_penalty": 1.0});
        assert_invalid(
            groups,
            "`num_beams` (5) must be divisible by `num_beam_groups` (2)",
        );
        assert_invalid(
            json!({"num_beams": 4, "num_beam_groups": 2}),
            "`diversity_penalty` should be greater than `0.0`",
        );
        let sampled = json!({"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 1.0, "do_sample": true});
        assert_invalid(sampled, "incompatible with `do_sample=true`");
        assert_invalid(
            json!({"force_words_ids": [[1]], "do_sample": true}),
            "`force_words_ids` (constrained",
        );
        assert_invalid(
            json!({"constraints": [], "num_beam_groups": 2}),
            "`constraints` (constrained",
        );
        assert_invalid(
            json!({"num_beams": 2, "low_memory": true}),
            "`low_memory=true`",
        );
    }

    #[test]
    fn processor_errors() {
        assert_invalid(
            json!({"repetition_penalty": 0.0}),
            "`repetition_penalty` has to be a strictly positive float",
        );
        assert_invalid(
            json!({"bad_words_ids": []}),
            "`bad_words_ids` must be a non-empty list",
        );
        assert_invalid(
            json!({"bad_words_ids": [[1], []]}),
            "`bad_words_ids` must be a non-empty list",
        );
        assert_invalid(
            json!({"sequence_bias": [[[], 1.0]]}),
            "`sequence_bias` must be",
        );
        let sampling = |field: &str, value: f64| json!({"do_sample": true, field: value});
        assert_invalid(
            sampling("temperature", 0.0),
            "`temperature` has to be a strictly positive float",
        );
        assert_invalid(sampling("top_h", 1.5), "`top_h` must be in (0, 1], got 1.5");
        assert_invalid(
            sampling("top_p", -0.1),
            "`top_p` must be in [0, 1], got -0.1",
        );
        assert_invalid(sampling("min_p", 1.5), "`min_p` must be in [0, 1], got 1.5");
        assert_invalid(sampling("top_p", 1.5), "`top_p` must be in [0, 1], got 1.5");
        assert_invalid(
            sampling("typical_p", 2.0),
            "`typical_p` must be in (0, 1], got 2",
        );
        assert_invalid(
            sampling("epsilon_cutoff", 1.0),
            "`epsilon_cutoff` must be in [0, 1), got 1",
        );
        assert_invalid(
            sampling("eta_cutoff", -0.5),
            "`eta_cutoff` must be in [0, 1), got -0.5",
        );
        assert_invalid(
            sampling("typical_p", 0.0),
            "`typical_p` must be in (0, 1], got 0",
        );
    }

    #[test]
    fn warnings_in_transformers_pass() -> Result<()> {
        // Sampling settings while not sampling, beam settings with one beam: only warnings there.
        check(json!({
            "temperature": 0.0, "top_p": -1.0, "top_k": 0, "min_p": 3.0, "typical_p": 0.0, "top_h": 9.0,
            "epsilon_cutoff": 5.0, "eta_cutoff": -1.0, "early_stopping": "never", "length_penalty": -2.0,
            "diversity_penalty": 0.0, "num_beam_groups": 3, "low_memory": true, "max_cache_len": 8,
            "output_scores": true, "custom_key": 1,
        }))?;
        // Neutral values build no processor.
        check(
            json!({"do_sample": true, "top_p": 1.0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "top_k": 0}),
        )?;
        check(json!({"num_return_sequences": 3, "do_sample": true}))?;
        check(
            json!({"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 0.5, "num_return_sequences": 4}),
        )?;
        check(
            json!({"cache_implementation": "paged", "exponential_decay_length_penalty": [2, 0.0]}),
        )?;
        check(json!({"suppress_tokens": [1], "forced_eos_token_id": [1, 2]}))?;
        GenerationConfig::default().validate()
    }
}
