//! Every `GenerationConfig` field of transformers 5.17, with the test that covers it (a golden
//! case made with transformers unless said otherwise), and what lmgen does not do yet. The table
//! must list exactly [`GenerationConfig::FIELDS`]; each named test must exist; and a config that
//! transformers accepts on a decoder-only model is never refused as unsupported, except for the
//! rows marked `Unbuilt`.

use std::collections::BTreeSet;
use std::path::Path;

use lmgen::generation::config::UnknownFields;
use lmgen::{Error, GenerateInput, GenerationConfig, Pipeline};
use serde_json::{json, Value};

/// How a field is covered.
#[derive(Debug, Clone, Copy)]
enum Cover {
    /// `path/to/file.rs::test_fn` under `crates/lmgen`.
    Test(&'static str),
    /// Metadata transformers keeps and ignores; tested as parsed and saved.
    Metadata(&'static str),
    /// Not built: lmgen refuses it by name (`check_implemented`). No field is, now; kept for the
    /// next one.
    #[allow(dead_code)]
    Unbuilt(&'static str),
    /// Accepted and ignored although it would change something in transformers; a known gap.
    Gap(&'static str),
}
use Cover::*;

const GOLDEN_GENERATE: Cover = Test("tests/golden_generate.rs::generate_cases_match_transformers");
const PROCESSOR_SETTINGS: Cover =
    Test("tests/golden_processors.rs::processor_settings_match_transformers_generate");
const GENCONFIG_CACHES: Cover =
    Test("tests/golden_genconfig.rs::cache_implementations_match_transformers");
const GENCONFIG_OUTPUTS: Cover =
    Test("tests/golden_genconfig.rs::hidden_states_and_attentions_match_transformers");
const ASSISTED: Cover =
    Test("tests/golden_assisted.rs::speculative_cases_match_transformers_and_their_greedy_twins");
const LEGACY: Cover = Test("tests/golden_legacy.rs::legacy_cases_match_transformers_4_47");
const COMPILE: Cover = Metadata(
    "torch.compile / continuous-batching settings of transformers: no effect on the output",
);

const COVERAGE: &[(&str, Cover)] = &[
    ("max_length", GOLDEN_GENERATE),
    ("max_new_tokens", GOLDEN_GENERATE),
    ("min_length", GOLDEN_GENERATE),
    ("min_new_tokens", GOLDEN_GENERATE),
    ("early_stopping", GOLDEN_GENERATE),
    ("max_time", Test("src/generation/stopping.rs::max_time")),
    (
        "stop_strings",
        Test("tests/golden_stop_strings.rs::stop_strings_fire_where_transformers_stopped"),
    ),
    ("do_sample", Test("tests/sampling_statistics.rs::plain_sampling_matches_softmax")),
    ("num_beams", GOLDEN_GENERATE),
    (
        "use_mtp",
        Test("tests/assisted_decoding.rs::invalid_uses_are_rejected_naming_the_problem"),
    ),
    ("use_cache", Test("tests/golden_genconfig.rs::prefill_chunk_size_matches_transformers")),
    ("cache_implementation", GENCONFIG_CACHES),
    ("cache_config", Test("tests/golden_genconfig.rs::quantized_cache_matches_transformers")),
    ("max_cache_len", GENCONFIG_CACHES),
    ("temperature", Test("tests/sampling_statistics.rs::temperature")),
    ("top_k", Test("tests/sampling_statistics.rs::top_k")),
    ("top_p", Test("tests/sampling_statistics.rs::top_p")),
    ("min_p", Test("tests/sampling_statistics.rs::min_p")),
    ("top_h", Test("tests/golden_processors.rs::processor_cases_match_transformers")),
    ("typical_p", Test("tests/sampling_statistics.rs::typical_p")),
    ("epsilon_cutoff", Test("tests/golden_processors.rs::processor_cases_match_transformers")),
    ("eta_cutoff", Test("tests/golden_processors.rs::processor_cases_match_transformers")),
    ("repetition_penalty", GOLDEN_GENERATE),
    ("encoder_repetition_penalty", PROCESSOR_SETTINGS),
    ("length_penalty", GOLDEN_GENERATE),
    ("no_repeat_ngram_size", GOLDEN_GENERATE),
    ("bad_words_ids", GOLDEN_GENERATE),
    ("renormalize_logits", GOLDEN_GENERATE),
    ("forced_bos_token_id", PROCESSOR_SETTINGS),
    ("forced_eos_token_id", GOLDEN_GENERATE),
    ("remove_invalid_values", PROCESSOR_SETTINGS),
    ("exponential_decay_length_penalty", GOLDEN_GENERATE),
    ("suppress_tokens", GOLDEN_GENERATE),
    ("begin_suppress_tokens", GOLDEN_GENERATE),
    ("sequence_bias", GOLDEN_GENERATE),
    (
        "token_healing",
        Test("tests/token_healing.rs::token_healing_matches_transformers"),
    ),
    ("guidance_scale", GOLDEN_GENERATE),
    (
        "watermarking_config",
        Test("tests/synthid.rs::generate_with_synthid_matches_transformers"),
    ),
    ("num_return_sequences", GOLDEN_GENERATE),
    ("output_attentions", GENCONFIG_OUTPUTS),
    ("output_hidden_states", GENCONFIG_OUTPUTS),
    ("output_scores", GOLDEN_GENERATE),
    ("output_logits", Test("tests/contrastive_dola.rs::scores_and_logits_follow_transformers")),
    ("return_dict_in_generate", GENCONFIG_OUTPUTS),
    ("pad_token_id", GOLDEN_GENERATE),
    ("bos_token_id", PROCESSOR_SETTINGS),
    ("eos_token_id", GOLDEN_GENERATE),
    ("encoder_no_repeat_ngram_size", PROCESSOR_SETTINGS),
    (
        "decoder_start_token_id",
        Metadata("encoder-decoder only: a decoder-only model ignores it, as transformers does"),
    ),
    (
        "is_assistant",
        Test("tests/golden_genconfig.rs::the_assistant_confidence_criterion_matches_transformers"),
    ),
    ("num_assistant_tokens", ASSISTED),
    ("num_assistant_tokens_schedule", ASSISTED),
    (
        "assistant_confidence_threshold",
        Test("tests/golden_genconfig.rs::the_assistant_confidence_criterion_matches_transformers"),
    ),
    ("prompt_lookup_num_tokens", GOLDEN_GENERATE),
    ("max_matching_ngram_size", Test("tests/assisted_decoding.rs::sampling_with_each_draft_runs_and_is_seeded")),
    ("assistant_early_exit", ASSISTED),
    (
        "assistant_lookbehind",
        Test("tests/assisted_decoding.rs::universal_assisted_decoding_reproduces_greedy"),
    ),
    (
        "target_lookbehind",
        Test("tests/assisted_decoding.rs::universal_assisted_decoding_reproduces_greedy"),
    ),
    (
        "assistant_ensemble_weight",
        Gap("validated, but speculative sampling stays lossless: the ensemble verification is not built"),
    ),
    (
        "speculation_type",
        Gap("\"dflash\" selects transformers' DFlash proposer, which lmgen does not have"),
    ),
    ("compile_config", COMPILE),
    ("disable_compile", COMPILE),
    ("continuous_batching_config", COMPILE),
    ("low_memory", LEGACY),
    ("penalty_alpha", LEGACY),
    ("dola_layers", LEGACY),
    ("diversity_penalty", LEGACY),
    ("num_beam_groups", LEGACY),
    (
        "constraints",
        Test("tests/group_constrained_beam.rs::constraints_as_library_api_equal_force_words_ids"),
    ),
    ("force_words_ids", LEGACY),
    ("prefill_chunk_size", Test("tests/golden_genconfig.rs::prefill_chunk_size_matches_transformers")),
    (
        "_from_model_config",
        Metadata("src/generation/config/load.rs::falls_back_to_config_json"),
    ),
    (
        "transformers_version",
        Metadata("src/generation/config/load.rs::save_and_load_round_trip"),
    ),
];

#[test]
fn the_table_lists_every_field_once() {
    let table: Vec<&str> = COVERAGE.iter().map(|(f, _)| *f).collect();
    let unique: BTreeSet<&str> = table.iter().copied().collect();
    assert_eq!(unique.len(), table.len(), "a field is listed twice");
    let fields: BTreeSet<&str> = GenerationConfig::FIELDS.iter().copied().collect();
    assert_eq!(
        unique, fields,
        "the table and GenerationConfig::FIELDS differ"
    );
    let missing: Vec<(&str, &str)> = COVERAGE
        .iter()
        .filter_map(|(f, c)| match c {
            Unbuilt(why) | Gap(why) => Some((*f, *why)),
            _ => None,
        })
        .collect();
    let unbuilt: Vec<&str> = missing.iter().map(|(f, _)| *f).collect();
    // What is still missing; shrink this list when a feature lands.
    assert_eq!(
        unbuilt,
        ["assistant_ensemble_weight", "speculation_type"],
        "{missing:#?}"
    );
}

#[test]
fn every_named_test_exists() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (field, cover) in COVERAGE {
        let (Test(spec) | Metadata(spec)) = cover else {
            continue;
        };
        let Some((file, name)) = spec.split_once("::") else {
            continue; // a Metadata note rather than a test
        };
        let text = std::fs::read_to_string(root.join(file))?;
        assert!(
            text.contains(&format!("fn {name}(")),
            "{field}: no `fn {name}` in {file}"
        );
    }
    Ok(())
}

/// One value of each field that transformers 5.17 accepts on a decoder-only model (with greedy
/// search unless the field selects a mode), generating 3 tokens with llama: none is refused as
/// unsupported except the `Unbuilt` rows.
#[test]
fn nothing_transformers_accepts_is_refused() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/models/llama");
    let pipe = Pipeline::from_pretrained(dir.to_str().unwrap_or_default())?;
    let input = GenerateInput::single(vec![1, 15, 27, 300, 42]);
    let samples: &[(&str, Value)] = &[
        ("max_length", json!({"max_length": 8})),
        ("min_length", json!({"min_length": 7})),
        ("min_new_tokens", json!({"min_new_tokens": 2})),
        (
            "early_stopping",
            json!({"early_stopping": "never", "num_beams": 2}),
        ),
        ("max_time", json!({"max_time": 60.0})),
        (
            "do_sample",
            json!({"do_sample": true, "temperature": 0.7, "top_k": 5, "top_p": 0.9}),
        ),
        ("min_p", json!({"do_sample": true, "min_p": 0.05})),
        ("top_h", json!({"do_sample": true, "top_h": 0.5})),
        ("typical_p", json!({"do_sample": true, "typical_p": 0.9})),
        (
            "epsilon_cutoff",
            json!({"do_sample": true, "epsilon_cutoff": 0.001}),
        ),
        (
            "eta_cutoff",
            json!({"do_sample": true, "eta_cutoff": 0.001}),
        ),
        ("use_cache", json!({"use_cache": false})),
        (
            "cache_implementation",
            json!({"cache_implementation": "offloaded_static", "max_cache_len": 32}),
        ),
        (
            "cache_config",
            json!({"cache_implementation": "quantized", "cache_config": {"backend": "hqq", "nbits": 4, "q_group_size": 16}}),
        ),
        ("repetition_penalty", json!({"repetition_penalty": 1.2})),
        (
            "encoder_repetition_penalty",
            json!({"encoder_repetition_penalty": 1.1}),
        ),
        (
            "length_penalty",
            json!({"length_penalty": 0.5, "num_beams": 2}),
        ),
        ("no_repeat_ngram_size", json!({"no_repeat_ngram_size": 2})),
        ("bad_words_ids", json!({"bad_words_ids": [[5]]})),
        ("renormalize_logits", json!({"renormalize_logits": true})),
        ("forced_bos_token_id", json!({"forced_bos_token_id": 3})),
        ("forced_eos_token_id", json!({"forced_eos_token_id": 2})),
        (
            "remove_invalid_values",
            json!({"remove_invalid_values": true}),
        ),
        (
            "exponential_decay_length_penalty",
            json!({"exponential_decay_length_penalty": [1, 1.5]}),
        ),
        ("suppress_tokens", json!({"suppress_tokens": [4]})),
        (
            "begin_suppress_tokens",
            json!({"begin_suppress_tokens": [4]}),
        ),
        ("sequence_bias", json!({"sequence_bias": [[[4], 1.0]]})),
        ("guidance_scale", json!({"guidance_scale": 1.5})),
        (
            "WatermarkingConfig",
            json!({"watermarking_config": {"greenlist_ratio": 0.25, "bias": 2.0}}),
        ),
        (
            "watermarking_config",
            json!({"watermarking_config": {"keys": [654, 400, 836, 123], "ngram_len": 5}}),
        ),
        (
            "num_return_sequences",
            json!({"num_return_sequences": 2, "do_sample": true}),
        ),
        (
            "output_attentions",
            json!({"output_attentions": true, "output_hidden_states": true, "output_scores": true, "output_logits": true, "return_dict_in_generate": true}),
        ),
        (
            "encoder_no_repeat_ngram_size",
            json!({"encoder_no_repeat_ngram_size": 2}),
        ),
        (
            "decoder_start_token_id",
            json!({"decoder_start_token_id": 0}),
        ),
        (
            "is_assistant",
            json!({"is_assistant": true, "assistant_confidence_threshold": 0.01}),
        ),
        (
            "prompt_lookup_num_tokens",
            json!({"prompt_lookup_num_tokens": 2, "max_matching_ngram_size": 2}),
        ),
        (
            "assistant_early_exit",
            json!({"assistant_early_exit": 1, "num_assistant_tokens": 3, "num_assistant_tokens_schedule": "heuristic"}),
        ),
        (
            "compile_config",
            json!({"compile_config": {"fullgraph": true}, "disable_compile": true}),
        ),
        ("low_memory", json!({"low_memory": false})),
        ("penalty_alpha", json!({"penalty_alpha": 0.6, "top_k": 4})),
        ("dola_layers", json!({"dola_layers": "high"})),
        (
            "num_beam_groups",
            json!({"num_beams": 2, "num_beam_groups": 2, "diversity_penalty": 0.5}),
        ),
        (
            "force_words_ids",
            json!({"num_beams": 2, "force_words_ids": [[7]]}),
        ),
        ("prefill_chunk_size", json!({"prefill_chunk_size": 2})),
        (
            "metadata",
            json!({"_from_model_config": false, "transformers_version": "5.17.0", "bos_token_id": 1, "pad_token_id": 0, "eos_token_id": 2}),
        ),
    ];
    let unbuilt: BTreeSet<&str> = COVERAGE
        .iter()
        .filter(|(_, c)| matches!(c, Unbuilt(_)))
        .map(|(f, _)| *f)
        .collect();
    for (field, value) in samples {
        let mut config = GenerationConfig::from_json(value, UnknownFields::Reject)?;
        config.update(&GenerationConfig::from_json(
            &json!({"max_new_tokens": 3}),
            UnknownFields::Reject,
        )?);
        if *field == "max_length" {
            config.max_new_tokens = None;
        }
        let result = pipe.generate(&input, &config);
        match (result, unbuilt.contains(field)) {
            (Ok(_), false) => {}
            (Err(Error::Unsupported { message, .. }), true) => {
                assert!(message.contains(field), "{field}: {message}")
            }
            (Ok(_), true) => panic!("{field} runs: move its row out of Unbuilt"),
            (Err(e), _) => panic!("{field} ({value}) is refused: {e}"),
        }
    }
    Ok(())
}
