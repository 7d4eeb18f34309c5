//! Generation modes, how a config selects one, and which of them lmgen implements today.
//!
//! Port of `GenerationMode` and `GenerationConfig.get_generation_mode`
//! (`src/transformers/generation/configuration_utils.py`, transformers 5).

use std::fmt;

use super::GenerationConfig;
use crate::error::{Error, Result};

/// A decoding strategy, as transformers' `GenerationMode` (dispatched by `GENERATION_MODES_MAPPING`).
#[doc(alias = "transformers.generation.configuration_utils.GenerationMode")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GenerationMode {
    /// Argmax of the processed scores (`num_beams=1`, `do_sample=false`).
    GreedySearch,
    /// Multinomial sampling (`num_beams=1`, `do_sample=true`).
    Sample,
    /// Beam search (`num_beams>1`).
    BeamSearch,
    /// Beam search drawing candidates by sampling (`num_beams>1`, `do_sample=true`).
    BeamSample,
    /// Diverse beam search (`num_beam_groups>1`); a Hub `custom_generate` repo in transformers 5.
    GroupBeamSearch,
    /// Constrained beam search (`constraints` or `force_words_ids`); a Hub repo in transformers 5.
    ConstrainedBeamSearch,
    /// Contrastive search (`penalty_alpha>0`, `top_k>1`); a Hub repo in transformers 5.
    ContrastiveSearch,
    /// Speculative decoding with an assistant, prompt lookup, early exit or MTP heads.
    AssistedGeneration,
    /// DoLa contrastive-layer decoding (`dola_layers`); a Hub repo in transformers 5.
    DolaGeneration,
}

impl GenerationMode {
    /// transformers' value for the mode, e.g. `"greedy_search"`.
    pub fn as_str(self) -> &'static str {
        match self {
            GenerationMode::GreedySearch => "greedy_search",
            GenerationMode::Sample => "sample",
            GenerationMode::BeamSearch => "beam_search",
            GenerationMode::BeamSample => "beam_sample",
            GenerationMode::GroupBeamSearch => "group_beam_search",
            GenerationMode::ConstrainedBeamSearch => "constrained_beam_search",
            GenerationMode::ContrastiveSearch => "contrastive_search",
            GenerationMode::AssistedGeneration => "assisted_generation",
            GenerationMode::DolaGeneration => "dola_generation",
        }
    }

    /// Words for error messages, as in transformers' `GenerationConfig` docstring.
    pub fn description(self) -> &'static str {
        match self {
            GenerationMode::GreedySearch => "greedy decoding",
            GenerationMode::Sample => "multinomial sampling",
            GenerationMode::BeamSearch => "beam-search decoding",
            GenerationMode::BeamSample => "beam-search multinomial sampling",
            GenerationMode::GroupBeamSearch => "diverse beam-search decoding",
            GenerationMode::ConstrainedBeamSearch => "constrained beam-search decoding",
            GenerationMode::ContrastiveSearch => "contrastive search",
            GenerationMode::AssistedGeneration => "assisted decoding",
            GenerationMode::DolaGeneration => "DoLa decoding",
        }
    }
}

impl fmt::Display for GenerationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The modes lmgen implements. Add a mode here when its strategy lands.
const IMPLEMENTED_MODES: &[GenerationMode] = &[
    GenerationMode::GreedySearch,
    GenerationMode::Sample,
    GenerationMode::BeamSearch,
    GenerationMode::BeamSample,
    GenerationMode::GroupBeamSearch,
    GenerationMode::ConstrainedBeamSearch,
    GenerationMode::ContrastiveSearch,
    GenerationMode::DolaGeneration,
    GenerationMode::AssistedGeneration,
];

/// The mode a config selects, with the setting that selected it and how to undo it.
struct Selection {
    mode: GenerationMode,
    cause: String,
    fix: &'static str,
}

impl GenerationConfig {
    /// The decoding strategy this config selects, as transformers' `get_generation_mode`.
    ///
    /// Reads the values in effect, i.e. with the global defaults for unset fields (transformers selects
    /// the mode after filling them), so `penalty_alpha > 0` alone selects contrastive search
    /// (`top_k` defaults to 50).
    pub(crate) fn mode(&self, has_assistant_model: bool) -> GenerationMode {
        self.selection(has_assistant_model).mode
    }

    fn selection(&self, has_assistant_model: bool) -> Selection {
        let num_beams = self.num_beams.unwrap_or(1);
        let do_sample = self.do_sample == Some(true);
        let select = |mode, cause: String, fix| Selection { mode, cause, fix };

        let mut selection = if self.constraints.is_some() || self.force_words_ids.is_some() {
            let field = if self.constraints.is_some() {
                "constraints"
            } else {
                "force_words_ids"
            };
            let fix = "unset `constraints` and `force_words_ids`";
            select(
                GenerationMode::ConstrainedBeamSearch,
                format!("`{field}`"),
                fix,
            )
        } else if num_beams == 1 {
            let top_k = self.top_k.unwrap_or(50);
            match (do_sample, self.penalty_alpha) {
                (true, _) => select(
                    GenerationMode::Sample,
                    "`do_sample=true`".into(),
                    "set `do_sample` to false",
                ),
                (false, Some(alpha)) if alpha > 0.0 && top_k > 1 => select(
                    GenerationMode::ContrastiveSearch,
                    format!("`penalty_alpha={alpha}` with `top_k={top_k}`"),
                    "unset `penalty_alpha`",
                ),
                (false, _) => select(GenerationMode::GreedySearch, String::new(), ""),
            }
        } else if let Some(groups) = self.num_beam_groups.filter(|groups| *groups > 1) {
            let cause = format!("`num_beam_groups={groups}` with `num_beams={num_beams}`");
            select(
                GenerationMode::GroupBeamSearch,
                cause,
                "set `num_beams` to 1",
            )
        } else if do_sample {
            let cause = format!("`num_beams={num_beams}` with `do_sample=true`");
            select(
                GenerationMode::BeamSample,
                cause,
                "set `num_beams` to 1 and `do_sample` to false",
            )
        } else {
            select(
                GenerationMode::BeamSearch,
                format!("`num_beams={num_beams}`"),
                "set `num_beams` to 1",
            )
        };

        let non_beam = |mode| matches!(mode, GenerationMode::GreedySearch | GenerationMode::Sample);
        // Assisted decoding extends greedy search and sampling only; other modes ignore these settings.
        let assistant = self.assistant_cause(has_assistant_model);
        if let Some((cause, fix)) = assistant.filter(|_| non_beam(selection.mode)) {
            selection = select(GenerationMode::AssistedGeneration, cause.into(), fix);
        }
        if self.dola_layers.is_some() && non_beam(selection.mode) {
            selection = select(
                GenerationMode::DolaGeneration,
                "`dola_layers`".into(),
                "unset `dola_layers`",
            );
        }
        selection
    }

    /// The setting that asks for assisted decoding, and how to undo it.
    fn assistant_cause(&self, has_assistant_model: bool) -> Option<(&'static str, &'static str)> {
        if has_assistant_model {
            Some(("an assistant model", "do not pass an assistant model"))
        } else if self.use_mtp == Some(true) {
            Some(("`use_mtp=true`", "set `use_mtp` to false"))
        } else if self.prompt_lookup_num_tokens.is_some() {
            Some((
                "`prompt_lookup_num_tokens`",
                "unset `prompt_lookup_num_tokens`",
            ))
        } else if self.assistant_early_exit.is_some() {
            Some(("`assistant_early_exit`", "unset `assistant_early_exit`"))
        } else {
            None
        }
    }

    /// Whether lmgen can run this config today: an [`Error::Unsupported`] names the mode or the setting
    /// that needs a feature not built yet, and how to turn it off.
    ///
    /// Settings that change nothing in the selected mode load and pass (sampling settings while not
    /// sampling, beam settings with one beam, assistant settings without an assistant, output flags,
    /// metadata, unknown keys), as in transformers, which at most warns about them.
    pub(crate) fn check_implemented(&self, has_assistant_model: bool) -> Result<()> {
        let selection = self.selection(has_assistant_model);
        // Deliberately stricter than transformers, which warns and ignores the draft in beam modes.
        if let Some((cause, fix)) = self.assistant_cause(has_assistant_model) {
            if matches!(
                selection.mode,
                GenerationMode::BeamSearch
                    | GenerationMode::BeamSample
                    | GenerationMode::GroupBeamSearch
                    | GenerationMode::ConstrainedBeamSearch
            ) {
                return Err(Error::config(format!(
                    "{cause} (assisted decoding) works with greedy search and sampling only, not with \
                     {} ({}); {fix} or set `num_beams` to 1",
                    selection.mode.description(),
                    selection.cause
                )));
            }
        }
        if !IMPLEMENTED_MODES.contains(&selection.mode) {
            return Err(Error::unsupported(format!(
                "{} ({}) is not implemented yet; {}",
                selection.cause,
                selection.mode.description(),
                selection.fix
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::UnknownFields;
    use super::*;

    fn config(value: Value) -> Result<GenerationConfig> {
        GenerationConfig::from_json(&value, UnknownFields::Keep)
    }

    #[test]
    fn mode_selection_follows_get_generation_mode() -> Result<()> {
        use GenerationMode::*;
        let cases = [
            (json!({}), false, GreedySearch),
            (
                json!({"do_sample": false, "num_beams": 1}),
                false,
                GreedySearch,
            ),
            (json!({"do_sample": true}), false, Sample),
            (json!({"penalty_alpha": 0.6}), false, ContrastiveSearch),
            (
                json!({"penalty_alpha": 0.6, "top_k": 1}),
                false,
                GreedySearch,
            ),
            (
                json!({"penalty_alpha": 0.6, "do_sample": true}),
                false,
                Sample,
            ),
            (json!({"num_beams": 4}), false, BeamSearch),
            (
                json!({"num_beams": 4, "do_sample": true}),
                false,
                BeamSample,
            ),
            (
                json!({"num_beams": 4, "num_beam_groups": 2}),
                false,
                GroupBeamSearch,
            ),
            (
                json!({"num_beams": 1, "num_beam_groups": 2}),
                false,
                GreedySearch,
            ),
            (
                json!({"force_words_ids": [[1]]}),
                false,
                ConstrainedBeamSearch,
            ),
            (
                json!({"constraints": [], "do_sample": true}),
                false,
                ConstrainedBeamSearch,
            ),
            (json!({}), true, AssistedGeneration),
            (
                json!({"do_sample": true, "prompt_lookup_num_tokens": 3}),
                false,
                AssistedGeneration,
            ),
            (
                json!({"assistant_early_exit": 2}),
                false,
                AssistedGeneration,
            ),
            (json!({"use_mtp": true}), false, AssistedGeneration),
            (json!({"use_mtp": false}), false, GreedySearch),
            (json!({"num_beams": 4}), true, BeamSearch),
            (json!({"dola_layers": "low"}), false, DolaGeneration),
            (
                json!({"dola_layers": "low", "prompt_lookup_num_tokens": 3}),
                false,
                AssistedGeneration,
            ),
            (
                json!({"dola_layers": [2, 4], "num_beams": 2}),
                false,
                BeamSearch,
            ),
        ];
        for (value, has_assistant, expected) in cases {
            assert_eq!(
                config(value.clone())?.mode(has_assistant),
                expected,
                "{value} {has_assistant}"
            );
        }
        assert_eq!(
            GenerationMode::GroupBeamSearch.to_string(),
            "group_beam_search"
        );
        Ok(())
    }

    #[test]
    fn greedy_search_with_its_processors_is_implemented() -> Result<()> {
        let c = config(json!({
            "repetition_penalty": 1.3, "min_new_tokens": 2, "min_length": 4, "max_new_tokens": 9,
            "eos_token_id": [1, 2], "pad_token_id": 0, "bos_token_id": 1, "use_cache": true,
            "cache_implementation": "dynamic", "return_dict_in_generate": true, "output_scores": true,
            "output_logits": true, "transformers_version": "5.0.0",
            "_from_model_config": false, "suppress_tokens": [], "custom_key": 3,
        }))?;
        c.check_implemented(false)
    }

    #[test]
    fn settings_that_change_nothing_in_greedy_search_pass() -> Result<()> {
        let c = config(json!({
            "do_sample": false, "temperature": 0.6, "top_k": 20, "top_p": 0.9, "min_p": 0.1,
            "typical_p": 0.5, "epsilon_cutoff": 0.1, "eta_cutoff": 0.1, "top_h": 0.5,
            "length_penalty": 2.0, "early_stopping": true, "num_assistant_tokens": 5,
            "assistant_confidence_threshold": 0.2, "num_assistant_tokens_schedule": "heuristic",
            "assistant_lookbehind": 3, "max_matching_ngram_size": 3, "penalty_alpha": 0.0,
            "diversity_penalty": 0.5, "low_memory": true, "output_hidden_states": true,
            "guidance_scale": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
        }))?;
        c.check_implemented(false)
    }

    #[test]
    fn other_modes_are_unsupported_naming_the_setting() {
        assert!(config(json!({"do_sample": true}))
            .and_then(|c| c.check_implemented(false))
            .is_ok());
        for beams in [
            json!({"num_beams": 2, "do_sample": true}),
            json!({"num_beams": 3}),
            json!({"num_beams": 3, "num_beam_groups": 3, "diversity_penalty": 1.0}),
            json!({"num_beams": 3, "force_words_ids": [[5]]}),
        ] {
            assert!(config(beams)
                .and_then(|c| c.check_implemented(false))
                .is_ok());
        }
        for built in [
            json!({"penalty_alpha": 0.6}),
            json!({"penalty_alpha": 0.6, "top_k": 4}),
            json!({"dola_layers": "high"}),
            json!({"dola_layers": [0, 1], "do_sample": true}),
        ] {
            assert!(config(built)
                .and_then(|c| c.check_implemented(false))
                .is_ok());
        }
        assert!(config(json!({"prompt_lookup_num_tokens": 3}))
            .and_then(|c| c.check_implemented(false))
            .is_ok());
        assert!(config(json!({}))
            .and_then(|c| c.check_implemented(true))
            .is_ok());
        let beams = config(json!({"num_beams": 2})).and_then(|c| c.check_implemented(true));
        assert!(
            matches!(&beams, Err(Error::GenerationConfig { message: m, .. }) if m.starts_with("an assistant model (assisted decoding) works with greedy search and sampling only")),
            "{beams:?}"
        );
        let beams = config(json!({"num_beams": 2, "prompt_lookup_num_tokens": 3}))
            .and_then(|c| c.check_implemented(false));
        assert!(
            matches!(beams, Err(Error::GenerationConfig { message: m, .. }) if m.contains("`num_beams=2`"))
        );
    }
}
