//! generate() against transformers on the golden checkpoints (`generate.json`): token-exact
//! sequences, and processed scores / transition scores where the case has them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lmgen::generation::config::UnknownFields;
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::Value;

mod common;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

/// The cases this build implements.
const CASES: &[&str] = &[
    "greedy",
    "greedy_batch_left_padded",
    "max_length",
    "eos_stop",
    "eos_list",
    "greedy_prompt1",
    "greedy_prompt3",
    "min_new_tokens",
    "min_length",
    "repetition_penalty",
    "repetition_penalty_reward",
    "no_repeat_ngram",
    "bad_words",
    "sequence_bias",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_eos",
    "exponential_decay",
    "renormalize_scores",
    "guidance_scale",
    "stop_strings",
    "beam",
    "beam_return_3",
    "beam_length_penalty_low",
    "beam_length_penalty_high",
    "beam_early_stopping_true",
    "beam_early_stopping_never",
    "beam_batch_ngram",
];

#[test]
fn generate_cases_match_transformers() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(golden().join("generate.json"))?;
    let cases: Vec<Value> = serde_json::from_str(&text)?;
    let mut pipes: HashMap<String, Pipeline> = HashMap::new();
    let mut checked = HashMap::<&str, usize>::new();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap_or_default();
        let Some(&known) = CASES.iter().find(|&&c| c == name) else {
            continue;
        };
        let model = case["model"].as_str().unwrap_or_default().to_string();
        if !pipes.contains_key(&model) {
            let dir = golden().join("models").join(&model);
            pipes.insert(
                model.clone(),
                Pipeline::from_pretrained(dir.to_str().unwrap_or_default())?,
            );
        }
        let pipe = &pipes[&model];
        let expected = &case["expected"];
        let mut overrides =
            GenerationConfig::from_json(&case["generation_config"], UnknownFields::Reject)?;
        if expected.get("scores").is_some() {
            overrides.output_scores = Some(true);
            overrides.return_dict_in_generate = Some(true);
        }
        let input = GenerateInput {
            input_ids: serde_json::from_value(case["input_ids"].clone())?,
            attention_mask: Some(serde_json::from_value(case["attention_mask"].clone())?),
        };
        let out = pipe.generate(&input, &overrides)?;
        *checked.entry(known).or_default() += 1;
        if !common::check_sequences(&format!("{model}/{name}"), &out, expected, &mut failures)? {
            continue;
        }
        if let Some(scores) = expected.get("scores").and_then(Value::as_array) {
            let got = out.scores.as_ref().expect("scores requested");
            for (b, row) in scores.iter().enumerate() {
                for (s, step) in row.as_array().into_iter().flatten().enumerate() {
                    for (v, w) in step.as_array().into_iter().flatten().enumerate() {
                        let g = got[s].row(b)[v];
                        if !common::close(g, common::float(w), 1e-3) {
                            failures
                                .push(format!("{model}/{name}: score [{b}][{s}][{v}] {g} != {w}"));
                        }
                    }
                }
            }
            let ts = out.compute_transition_scores(true)?;
            let want_ts = expected["transition_scores"]
                .as_array()
                .expect("transition_scores");
            for (b, row) in want_ts.iter().enumerate() {
                for (s, w) in row.as_array().into_iter().flatten().enumerate() {
                    if !common::close(ts[b][s], common::float(w), 1e-3) {
                        failures.push(format!(
                            "{model}/{name}: transition score [{b}][{s}] {} != {w}",
                            ts[b][s]
                        ));
                    }
                }
            }
        }
    }
    for c in CASES {
        assert!(
            checked.get(c).copied().unwrap_or(0) > 0,
            "no golden case named {c}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}
