//! The models shipped in `models/` (trained by `tools/train/`) against transformers: the prompt
//! ids, the greedy sequences token for token and the decoded text that transformers 5 produced on
//! them (`tests/fixtures/shipped_model.json`, made by `tools/train/golden.py` on CPU in f32).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lmgen::generation::config::UnknownFields;
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::Value;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

fn golden() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shipped_model.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn shipped_models_match_transformers_greedy() {
    let golden = golden();
    let cases = golden["cases"].as_array().unwrap();
    let mut pipes: HashMap<String, Pipeline> = HashMap::new();
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let model = case["model"].as_str().unwrap().to_string();
        let pipe = pipes.entry(model.clone()).or_insert_with(|| {
            Pipeline::from_pretrained(models().join(&model).to_str().unwrap()).unwrap()
        });
        let input_ids = ids(&case["input_ids"]);
        let mask: Vec<Vec<u8>> = serde_json::from_value(case["attention_mask"].clone()).unwrap();
        // lmgen's tokenizer gives transformers' prompt ids (the unpadded part of each row).
        for ((prompt, row), row_mask) in case["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&input_ids)
            .zip(&mask)
        {
            let want: Vec<u32> = row
                .iter()
                .zip(row_mask)
                .filter(|(_, &m)| m == 1)
                .map(|(&t, _)| t)
                .collect();
            let got = pipe.tokenizer.encode(prompt.as_str().unwrap()).unwrap();
            if got != want {
                failures.push(format!("{model}/{name}: prompt ids {got:?} != {want:?}"));
            }
        }
        let overrides =
            GenerationConfig::from_json(&case["generation_config"], UnknownFields::Reject).unwrap();
        let input = GenerateInput {
            input_ids: input_ids.clone(),
            attention_mask: Some(mask),
        };
        let out = pipe.generate(&input, &overrides).unwrap();
        let want = ids(&case["sequences"]);
        if out.sequences != want {
            failures.push(format!(
                "{model}/{name}: sequences\n  got  {:?}\n  want {want:?}",
                out.sequences
            ));
            continue;
        }
        let width = input_ids[0].len();
        for (row, text) in out.sequences.iter().zip(case["texts"].as_array().unwrap()) {
            let got = pipe.tokenizer.decode(&row[width..], true).unwrap();
            if got != text.as_str().unwrap() {
                failures.push(format!("{model}/{name}: text {got:?} != {text}"));
            }
        }
    }
    assert!(cases.len() >= 10, "golden file has too few cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The main model continues a prompt in English: its greedy text is words of the corpus (a check
/// that the shipped weights are the trained ones, not a random-weight checkpoint).
#[test]
fn shipped_model_writes_words() {
    let pipe = Pipeline::from_pretrained(models().join("tiny-austen").to_str().unwrap()).unwrap();
    let overrides = GenerationConfig {
        do_sample: Some(false),
        max_new_tokens: Some(30),
        ..GenerationConfig::default()
    };
    let text = pipe
        .generate_text("It is a truth universally acknowledged", &overrides)
        .unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(words.len() >= 10, "{text:?}");
    let common = [
        "the", "of", "to", "and", "a", "that", "in", "was", "her", "be", "he", "she",
    ];
    let hits = words
        .iter()
        .filter(|w| {
            common.contains(
                &w.trim_matches(|c: char| !c.is_alphabetic())
                    .to_lowercase()
                    .as_str(),
            )
        })
        .count();
    assert!(hits >= 3, "{text:?}");
}
