//! Assisted decoding against transformers on the golden checkpoints (`generate.json`): the
//! speculative cases (`prompt_lookup` on every model, `assisted_constant` and `assisted_heuristic`
//! with the `llama-draft` assistant) reproduce transformers' sequences, which equal their greedy
//! twins (`expect_same_as`). Early exit and the model as its own draft, which the golden set does not
//! cover, must reproduce the twins too, with the processed scores of plain greedy decoding.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lmgen::generation::config::UnknownFields;
use lmgen::generation::GenerateOptions;
use lmgen::{GenerateInput, GenerateOutput, GenerationConfig, Pipeline};
use serde_json::{json, Value};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(golden().join("generate.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

struct Pipes(HashMap<String, Pipeline>);

impl Pipes {
    fn get(&mut self, model: &str) -> &Pipeline {
        self.0.entry(model.to_string()).or_insert_with(|| {
            let dir = golden().join("models").join(model);
            Pipeline::from_pretrained(dir.to_str().unwrap()).unwrap()
        })
    }
}

fn input(case: &Value) -> GenerateInput {
    GenerateInput {
        input_ids: serde_json::from_value(case["input_ids"].clone()).unwrap(),
        attention_mask: Some(serde_json::from_value(case["attention_mask"].clone()).unwrap()),
    }
}

fn config(case: &Value, extra: Value) -> GenerationConfig {
    let mut c =
        GenerationConfig::from_json(&case["generation_config"], UnknownFields::Reject).unwrap();
    c.update(&GenerationConfig::from_json(&extra, UnknownFields::Reject).unwrap());
    c
}

fn run(pipes: &mut Pipes, case: &Value, extra: Value, assistant: Option<&str>) -> GenerateOutput {
    let overrides = config(case, extra);
    let assistant = assistant.map(|a| {
        let dir = golden().join("models").join(a);
        Pipeline::from_pretrained(dir.to_str().unwrap()).unwrap()
    });
    let pipe = pipes.get(case["model"].as_str().unwrap());
    let options = GenerateOptions {
        assistant_model: assistant.as_ref().map(|a| a.model.as_ref()),
        ..GenerateOptions::default()
    };
    pipe.generate_with(&input(case), &overrides, options)
        .unwrap()
}

fn expected(case: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(case["expected"]["sequences"].clone()).unwrap()
}

#[test]
fn speculative_cases_match_transformers_and_their_greedy_twins() {
    let cases = cases();
    let by_name: HashMap<(String, String), &Value> = cases
        .iter()
        .map(|c| {
            let key = (
                c["model"].as_str().unwrap().to_string(),
                c["name"].as_str().unwrap().to_string(),
            );
            (key, c)
        })
        .collect();
    let mut pipes = Pipes(HashMap::new());
    let mut checked = HashMap::<String, usize>::new();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        if !["prompt_lookup", "assisted_constant", "assisted_heuristic"].contains(&name) {
            continue;
        }
        let model = case["model"].as_str().unwrap();
        let twin_name = case["expect_same_as"].as_str().unwrap();
        let twin = by_name[&(model.to_string(), twin_name.to_string())];
        assert_eq!(
            expected(case),
            expected(twin),
            "{model}/{name}: golden twins differ"
        );
        let out = run(
            &mut pipes,
            case,
            json!({}),
            case["assistant_model"].as_str(),
        );
        *checked.entry(name.to_string()).or_default() += 1;
        if out.sequences != expected(case) {
            failures.push(format!(
                "{model}/{name}\n  got  {:?}\n  want {:?}",
                out.sequences,
                expected(case)
            ));
        }
        let stats = out.assisted.unwrap();
        assert!(
            stats.rounds > 0 && stats.accepted <= stats.drafted,
            "{model}/{name}: {stats:?}"
        );
        // The greedy twin through the plain loop gives the same sequence.
        let plain = run(&mut pipes, twin, json!({}), None);
        assert_eq!(plain.sequences, expected(twin), "{model}/{twin_name}");
        assert!(plain.assisted.is_none());
    }
    assert_eq!(checked.get("prompt_lookup"), Some(&6), "{checked:?}");
    assert_eq!(checked.get("assisted_constant"), Some(&1));
    assert_eq!(checked.get("assisted_heuristic"), Some(&1));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `|a - b| <= tol` everywhere, `-inf` exactly.
fn same_scores(a: &[lmgen::generation::Scores], b: &[lmgen::generation::Scores], tol: f32) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.data.iter().zip(&y.data).all(|(&u, &v)| {
                (u == v)
                    || (u.is_finite() && v.is_finite() && (u - v).abs() <= tol * v.abs().max(1.0))
            })
        })
}

#[test]
fn early_exit_and_self_draft_reproduce_greedy_with_its_scores() {
    let cases = cases();
    let mut pipes = Pipes(HashMap::new());
    let mut seen = 0;
    for twin in cases.iter().filter(|c| c["name"] == "greedy_prompt3") {
        let model = twin["model"].as_str().unwrap();
        let scores = json!({"output_scores": true, "return_dict_in_generate": true});
        let plain = run(&mut pipes, twin, scores.clone(), None);
        assert_eq!(plain.sequences, expected(twin), "{model}: plain greedy");
        let plain_scores = plain.scores.clone().unwrap();
        for extra in [
            json!({"assistant_early_exit": 1, "num_assistant_tokens": 3}),
            json!({"assistant_early_exit": 1, "num_assistant_tokens_schedule": "heuristic"}),
        ] {
            let mut fields = scores.clone();
            fields
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let out = run(&mut pipes, twin, fields, None);
            assert_eq!(out.sequences, expected(twin), "{model}: {extra}");
            assert!(
                same_scores(out.scores.as_ref().unwrap(), &plain_scores, 1e-4),
                "{model}: {extra}: processed scores differ from greedy's"
            );
            assert!(out.assisted.unwrap().drafted > 0, "{model}: {extra}");
        }
        // The model as its own draft: every candidate is accepted.
        let out = run(&mut pipes, twin, scores.clone(), Some(model));
        assert_eq!(out.sequences, expected(twin), "{model}: self-draft");
        let stats = out.assisted.unwrap();
        assert_eq!(
            stats.accepted, stats.drafted,
            "{model}: self-draft {stats:?}"
        );
        assert!(
            same_scores(out.scores.as_ref().unwrap(), &plain_scores, 1e-4),
            "{model}: self-draft scores"
        );
        seen += 1;
    }
    assert_eq!(seen, 6);
}
