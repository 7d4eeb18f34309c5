//! generate() against transformers 4.47 on the golden checkpoints (`legacy.json`): the decoding
//! modes transformers 5 moved to Hub repos. Token-exact sequences, and beam scores where a case
//! has them.
//!
//! Every case runs; [`MODES`] lists the name prefixes that must each have cases on every model
//! (group and constrained beam search are also checked in detail in `group_constrained_beam.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lmgen::generation::config::UnknownFields;
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::Value;

/// Name prefixes of the `legacy.json` cases: each mode transformers 5 moved out of its core.
const MODES: &[&str] = &[
    "greedy_v4_crosscheck",
    "contrastive",
    "dola_",
    "group_beam",
    "constrained_beam",
];

/// Models every implemented prefix must have cases for.
const MODELS: &[&str] = &["gpt2", "llama", "mistral", "qwen2"];

mod common;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

#[test]
fn legacy_cases_match_transformers_4_47() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(golden().join("legacy.json"))?;
    let cases: Vec<Value> = serde_json::from_str(&text)?;
    let mut pipes: HashMap<String, Pipeline> = HashMap::new();
    let mut checked = HashMap::<(&str, String), usize>::new();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap_or_default();
        let Some(&prefix) = MODES.iter().find(|&&p| name.starts_with(p)) else {
            failures.push(format!("{name}: a case of no known mode"));
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
        let overrides =
            GenerationConfig::from_json(&case["generation_config"], UnknownFields::Reject)?;
        let input = GenerateInput {
            input_ids: serde_json::from_value(case["input_ids"].clone())?,
            attention_mask: Some(serde_json::from_value(case["attention_mask"].clone())?),
        };
        *checked.entry((prefix, model.clone())).or_default() += 1;
        let out = match pipes[&model].generate(&input, &overrides) {
            Ok(out) => out,
            Err(e) => {
                failures.push(format!("{model}/{name}: {e}"));
                continue;
            }
        };
        let expected = &case["expected"];
        common::check_sequences(&format!("{model}/{name}"), &out, expected, &mut failures)?;
    }
    for prefix in MODES {
        for model in MODELS {
            assert!(
                checked.contains_key(&(*prefix, model.to_string())),
                "no legacy case starting with {prefix} for {model}"
            );
        }
    }
    assert_eq!(
        checked.values().sum::<usize>(),
        cases.len(),
        "every case ran"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// Gemma 2 in the legacy modes against transformers 4.47 (`golden-legacy-gemma2/`, made by
/// `tools/make_golden_legacy_gemma2.py`): three shapes, several diversity penalties and contrastive
/// settings, each case once with a DynamicCache and once with the HybridCache real Gemma 2
/// checkpoints select. 4.47 runs Gemma 2 with eager attention (soft-capping on), so the cases load
/// with `attn_implementation: eager`; a setting 4.47 refuses must be refused here too.
#[test]
fn gemma2_legacy_cases_match_transformers_4_47() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-legacy-gemma2");
    let text = std::fs::read_to_string(root.join("legacy_gemma2.json"))?;
    let cases: Vec<Value> = serde_json::from_str(&text)?;
    let mut pipes: HashMap<String, Pipeline> = HashMap::new();
    let mut failures = Vec::new();
    let (mut matched, mut refused) = (0, 0);
    for case in &cases {
        let name = case["name"].as_str().unwrap_or_default();
        let model = case["model"].as_str().unwrap_or_default().to_string();
        assert_eq!(case["attn_implementation"], "eager", "{model}/{name}");
        if !pipes.contains_key(&model) {
            let options = lmgen::models::LoadOptions {
                attn_implementation: lmgen::models::AttnImplementation::Eager,
                ..Default::default()
            };
            let dir = root.join("models").join(&model);
            pipes.insert(
                model.clone(),
                Pipeline::load(dir.to_str().unwrap_or_default(), &options)?,
            );
        }
        let label = format!("{model}/{name}");
        let overrides =
            GenerationConfig::from_json(&case["generation_config"], UnknownFields::Reject)?;
        if let Some(error) = case.get("error").and_then(Value::as_str) {
            let prompts: Vec<String> = serde_json::from_value(case["prompts"].clone())?;
            let input = pipes[&model].encode_prompts(&prompts, &overrides)?;
            match pipes[&model].generate(&input, &overrides) {
                Ok(_) => {
                    failures.push(format!("{label}: transformers raises ({error}), lmgen ran"))
                }
                Err(_) => refused += 1,
            }
            continue;
        }
        let input = GenerateInput {
            input_ids: serde_json::from_value(case["input_ids"].clone())?,
            attention_mask: Some(serde_json::from_value(case["attention_mask"].clone())?),
        };
        match pipes[&model].generate(&input, &overrides) {
            Ok(out) => {
                if common::check_sequences(&label, &out, &case["expected"], &mut failures)? {
                    matched += 1;
                }
            }
            Err(e) => failures.push(format!("{label}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(matched + refused, cases.len());
    assert!(
        refused > 0 && matched > 55,
        "{matched} matched, {refused} refused"
    );
    Ok(())
}
