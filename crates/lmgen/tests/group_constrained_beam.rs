//! Group (diverse) and constrained beam search: the transformers 4.47 golden cases of
//! `legacy.json` (token-exact sequences, `sequences_scores` within 1e-3), the constraints as library
//! API, score bookkeeping, and the errors transformers raises for invalid combinations.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lmgen::generation::config::UnknownFields;
use lmgen::generation::constraints::Constraint;
use lmgen::generation::GenerateOptions;
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::{json, Value};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn pipeline(model: &str) -> Pipeline {
    let dir = golden().join("models").join(model);
    Pipeline::from_pretrained(dir.to_str().unwrap()).unwrap()
}

fn config(fields: Value) -> GenerationConfig {
    GenerationConfig::from_json(&fields, UnknownFields::Reject).unwrap()
}

/// The "The quick brown fox" prompt of the golden cases, for gpt2.
fn gpt2_prompt() -> GenerateInput {
    GenerateInput::single(vec![
        52, 382, 221, 458, 336, 75, 293, 299, 87, 78, 278, 79, 88,
    ])
}

#[test]
fn golden_group_and_constrained_cases_match_transformers() {
    let text = std::fs::read_to_string(golden().join("legacy.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut pipes: HashMap<String, Pipeline> = HashMap::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        if !(name.starts_with("group_beam") || name.starts_with("constrained_beam")) {
            continue;
        }
        let model = case["model"].as_str().unwrap().to_string();
        let pipe = pipes
            .entry(model.clone())
            .or_insert_with(|| pipeline(&model));
        let overrides =
            GenerationConfig::from_json(&case["generation_config"], UnknownFields::Reject).unwrap();
        let input = GenerateInput {
            input_ids: serde_json::from_value(case["input_ids"].clone()).unwrap(),
            attention_mask: Some(serde_json::from_value(case["attention_mask"].clone()).unwrap()),
        };
        let out = pipe.generate(&input, &overrides).unwrap();
        checked += 1;
        let want: Vec<Vec<u32>> =
            serde_json::from_value(case["expected"]["sequences"].clone()).unwrap();
        if out.sequences != want {
            failures.push(format!(
                "{model}/{name}: sequences\n  got  {:?}\n  want {want:?}",
                out.sequences
            ));
            continue;
        }
        let want: Vec<f32> =
            serde_json::from_value(case["expected"]["sequences_scores"].clone()).unwrap();
        let got = out.sequences_scores.unwrap();
        let close = got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(g, w)| (g - w).abs() <= 1e-3 * w.abs().max(1.0));
        if !close {
            failures.push(format!(
                "{model}/{name}: sequences_scores {got:?} != {want:?}"
            ));
        }
    }
    assert_eq!(
        checked, 16,
        "4 group and 4 constrained cases per model family"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The generated part of each sequence.
fn generated(out: &lmgen::GenerateOutput) -> Vec<Vec<u32>> {
    (0..out.sequences.len())
        .map(|i| out.generated(i).to_vec())
        .collect()
}

fn contains(haystack: &[u32], needle: &[u32]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// transformers returns beams that fulfil the constraints when at least `num_return_sequences` do
/// (else it fills up with the best others).
#[test]
fn the_returned_sequence_fulfils_the_constraints() {
    let pipe = pipeline("gpt2");
    let out = pipe
        .generate(
            &gpt2_prompt(),
            &config(json!({
                "num_beams": 4, "max_new_tokens": 10,
                "force_words_ids": [[40, 41], [[100], [200, 201]]],
            })),
        )
        .unwrap();
    for g in generated(&out) {
        assert!(contains(&g, &[40, 41]), "{g:?} lacks [40, 41]");
        assert!(
            g.contains(&100) || contains(&g, &[200, 201]),
            "{g:?} lacks 100 and [200, 201]"
        );
    }
}

#[test]
fn constraints_as_library_api_equal_force_words_ids() {
    let pipe = pipeline("gpt2");
    let base = json!({"num_beams": 5, "max_new_tokens": 12, "pad_token_id": 0});
    let mut with_words = base.clone();
    with_words["force_words_ids"] = json!([[11, 29], [[432], [56, 301]]]);
    let want = pipe.generate(&gpt2_prompt(), &config(with_words)).unwrap();
    let options = GenerateOptions {
        constraints: vec![
            Constraint::phrasal(vec![11, 29]).unwrap(),
            Constraint::disjunctive(vec![vec![432], vec![56, 301]]).unwrap(),
        ],
        ..GenerateOptions::default()
    };
    let got = pipe
        .generate_with(&gpt2_prompt(), &config(base), options)
        .unwrap();
    assert_eq!(got.sequences, want.sequences);
    assert_eq!(got.sequences_scores, want.sequences_scores);
}

/// `sum(transition_scores) / generated_len ** length_penalty == sequences_scores`, with the beam
/// indices pointing at the rows each token was scored on.
fn check_transition_scores(fields: Value) {
    let pipe = pipeline("llama");
    let out = pipe
        .generate(
            &GenerateInput::single(vec![1, 56, 386, 225]),
            &config(fields),
        )
        .unwrap();
    let ts = out.compute_transition_scores(false).unwrap();
    let beams = out.beam_indices.as_ref().unwrap();
    let scores = out.sequences_scores.as_ref().unwrap();
    for (i, row) in ts.iter().enumerate() {
        let len = beams[i].iter().filter(|&&b| b >= 0).count() as f32;
        let want = row.iter().sum::<f32>() / len.powf(1.5);
        assert!((want - scores[i]).abs() < 1e-3, "{want} != {}", scores[i]);
    }
}

#[test]
fn group_beam_transition_scores_reproduce_sequences_scores() {
    check_transition_scores(json!({
        "num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 2.0, "num_return_sequences": 4,
        "max_new_tokens": 8, "eos_token_id": 337, "length_penalty": 1.5, "output_scores": true,
        "return_dict_in_generate": true,
    }));
}

#[test]
fn constrained_beam_transition_scores_reproduce_sequences_scores() {
    check_transition_scores(json!({
        "num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 8, "eos_token_id": 337,
        "length_penalty": 1.5, "output_scores": true, "return_dict_in_generate": true,
        "force_words_ids": [[500, 501]],
    }));
}

#[test]
fn diversity_penalty_makes_groups_differ() {
    let pipe = pipeline("llama");
    let fields = |penalty: f64| {
        json!({"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": penalty,
               "num_return_sequences": 4, "max_new_tokens": 6})
    };
    let weak = pipe
        .generate(
            &GenerateInput::single(vec![1, 56, 386, 225]),
            &config(fields(1e-6)),
        )
        .unwrap();
    let strong = pipe
        .generate(
            &GenerateInput::single(vec![1, 56, 386, 225]),
            &config(fields(100.0)),
        )
        .unwrap();
    // With an overwhelming penalty the two groups never share a token at the same step.
    let g = generated(&strong);
    let firsts: Vec<u32> = g.iter().map(|r| r[0]).collect();
    let distinct: std::collections::HashSet<_> = firsts.iter().collect();
    assert!(distinct.len() >= 2, "{firsts:?}");
    assert_ne!(generated(&weak), g);
}

fn error_of<'a>(pipe: &'a Pipeline, fields: Value, options: GenerateOptions<'a>) -> String {
    let config = GenerationConfig::from_json(&fields, UnknownFields::Reject);
    let config = match config {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    pipe.generate_with(
        &GenerateInput::single(vec![1, 56, 386, 225]),
        &config,
        options,
    )
    .unwrap_err()
    .to_string()
}

#[test]
fn invalid_combinations_get_transformers_errors() {
    let pipe = pipeline("llama");
    let cases = [
        (
            json!({"num_beams": 5, "num_beam_groups": 2, "diversity_penalty": 1.0}),
            "`num_beams` (5) must be divisible by `num_beam_groups` (2)",
        ),
        (
            json!({"num_beams": 2, "num_beam_groups": 4, "diversity_penalty": 1.0}),
            "`num_beam_groups` (4) must be <= `num_beams` (2)",
        ),
        (
            json!({"num_beams": 4, "num_beam_groups": 2}),
            "`diversity_penalty` should be greater than `0.0`",
        ),
        (
            json!({"num_beams": 4, "diversity_penalty": 1.0}),
            "`diversity_penalty` (1) is only used by diverse beam search",
        ),
        (
            json!({"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 1.0, "do_sample": true}),
            "incompatible with `do_sample=true`",
        ),
        (
            json!({"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 1.0, "num_return_sequences": 5}),
            "`num_return_sequences` (5)",
        ),
        (
            json!({"num_beams": 4, "force_words_ids": [[5]], "do_sample": true}),
            "`force_words_ids` (constrained beam search) is incompatible with `do_sample=true`",
        ),
        (
            json!({"num_beams": 4, "force_words_ids": [[5]], "num_beam_groups": 2, "diversity_penalty": 1.0}),
            "`force_words_ids` (constrained beam search) is incompatible with `num_beam_groups` (2) > 1",
        ),
        (
            json!({"force_words_ids": [[5]]}),
            "`num_beams` has to be an integer strictly greater than 1",
        ),
        (
            json!({"num_beams": 2, "force_words_ids": [[5, -1]]}),
            "`force_words_ids` has to either be",
        ),
        (
            json!({"num_beams": 2, "force_words_ids": [[[5], [5, 6]]]}),
            "can't be a complete subset of another list",
        ),
    ];
    for (fields, want) in cases {
        let err = error_of(&pipe, fields.clone(), GenerateOptions::default());
        assert!(err.contains(want), "{fields}: {err}");
    }
    let sampled = GenerateOptions {
        constraints: vec![Constraint::phrasal(vec![5]).unwrap()],
        ..GenerateOptions::default()
    };
    let err = error_of(&pipe, json!({"num_beams": 2, "do_sample": true}), sampled);
    assert!(
        err.contains(
            "`constraints` (constrained beam search) is incompatible with `do_sample=true`"
        ),
        "{err}"
    );
}

/// A batch runs each item as if alone: every batch item's beams, groups and hypotheses are its own.
#[test]
fn batched_items_decode_as_if_alone() {
    let pipe = pipeline("llama");
    let a = vec![1, 56, 386, 225, 40];
    let b = vec![1, 626, 686, 453, 337];
    for fields in [
        json!({"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 1.5,
               "num_return_sequences": 2, "max_new_tokens": 7}),
        json!({"num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 7,
               "force_words_ids": [[500, 501]]}),
    ] {
        let cfg = config(fields.clone());
        let batch = GenerateInput {
            input_ids: vec![a.clone(), b.clone()],
            attention_mask: None,
        };
        let both = pipe.generate(&batch, &cfg).unwrap();
        let alone_a = pipe
            .generate(&GenerateInput::single(a.clone()), &cfg)
            .unwrap();
        let alone_b = pipe
            .generate(&GenerateInput::single(b.clone()), &cfg)
            .unwrap();
        let mut want = alone_a.sequences.clone();
        want.extend(alone_b.sequences.clone());
        assert_eq!(both.sequences, want, "{fields}");
        let scores = both.sequences_scores.unwrap();
        let mut want = alone_a.sequences_scores.unwrap();
        want.extend(alone_b.sequences_scores.unwrap());
        for (g, w) in scores.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{fields}: {scores:?} != {want:?}");
        }
    }
}
