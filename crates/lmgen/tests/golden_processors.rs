//! Logits processors against transformers (`processors.json`): every single-processor case built from
//! its class name and constructor arguments, and every `chain_*` case built from a generation config
//! as `generate()` builds it (on top of the llama checkpoint's `generation_config.json`). Within 1e-5;
//! `-inf` positions exactly.

use std::path::{Path, PathBuf};

use lmgen::generation::config::UnknownFields;
use lmgen::generation::logits::{processor_from_hf, LogitsProcessorList, ProcessorContext};
use lmgen::generation::Scores;
use lmgen::{GenerationConfig, TokenId};
use serde_json::Value;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

/// `null` is -inf; "nan"/"inf" stand for themselves.
fn float(v: &Value) -> f32 {
    match v {
        Value::Null => f32::NEG_INFINITY,
        Value::String(s) if s == "nan" => f32::NAN,
        Value::String(s) if s == "inf" => f32::INFINITY,
        Value::String(s) if s == "-inf" => f32::NEG_INFINITY,
        other => other.as_f64().map_or(f32::NAN, |x| x as f32),
    }
}

fn scores(v: &Value) -> Scores {
    let rows: Vec<Vec<f32>> = v
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .map_or_else(Vec::new, |r| r.iter().map(float).collect())
                })
                .collect()
        })
        .unwrap_or_default();
    let vocab = rows.first().map_or(0, Vec::len);
    Scores::new(rows.concat(), rows.len(), vocab)
}

fn close(got: f32, want: f32) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= 1e-5 * want.abs().max(1.0)
}

#[test]
fn processor_cases_match_transformers() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(golden().join("processors.json"))?;
    let cases: Vec<Value> = serde_json::from_str(&text)?;
    let llama = golden().join("models/llama");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap_or_default();
        let input_ids: Vec<Vec<TokenId>> = serde_json::from_value(case["input_ids"].clone())?;
        let mut s = scores(&case["scores"]);
        let want = scores(&case["output"]);
        if let Some(class) = case["processor"].as_str() {
            processor_from_hf(class, &case["args"])?.process(&input_ids, &mut s)?;
        } else {
            let mut config = GenerationConfig::from_pretrained(&llama)?;
            config.update(&GenerationConfig::from_json(
                &case["generation_config"],
                UnknownFields::Reject,
            )?);
            let prompt_length = case["prompt_length"].as_u64().unwrap_or_default() as usize;
            let lengths = config.resolve_lengths(prompt_length, None)?;
            let prompt: Vec<Vec<TokenId>> = input_ids
                .iter()
                .map(|r| r[..prompt_length].to_vec())
                .collect();
            let list = LogitsProcessorList::from_config(
                &config,
                ProcessorContext {
                    prompt_ids: Some(&prompt),
                    ..ProcessorContext::new(prompt_length, lengths.min_length, lengths.max_length)
                },
            )?;
            let expected: Vec<&str> = case["processors"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let got: Vec<&str> = list.names().collect();
            // transformers' chain here was built without `_prepare_generated_length`, so it has no
            // `MinLengthLogitsProcessor` for `min_new_tokens`; generate() adds one, with the same effect.
            let got: Vec<&str> = got
                .into_iter()
                .filter(|n| expected.contains(n) || *n != "MinLengthLogitsProcessor")
                .collect();
            if got != expected {
                failures.push(format!("{name}: processors {got:?} != {expected:?}"));
            }
            list.process(&input_ids, &mut s)?;
        }
        let bad = s
            .data
            .iter()
            .zip(&want.data)
            .position(|(&g, &w)| !close(g, w));
        if s.data.len() != want.data.len() {
            failures.push(format!("{name}: shape"));
        } else if let Some(i) = bad {
            failures.push(format!(
                "{name}: at [{}, {}] got {} want {}",
                i / s.vocab,
                i % s.vocab,
                s.data[i],
                want.data[i]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Greedy generate() with processor settings beyond `generate.json`, against transformers
/// (`fixtures/processor_settings.json`, made by `tools/processor_settings.py`).
#[test]
fn processor_settings_match_transformers_generate() -> anyhow::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/processor_settings.json");
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut pipes = std::collections::HashMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let model = case["model"].as_str().unwrap_or_default().to_string();
        if !pipes.contains_key(&model) {
            let dir = golden().join("models").join(&model);
            pipes.insert(
                model.clone(),
                lmgen::Pipeline::from_pretrained(dir.to_str().unwrap_or_default())?,
            );
        }
        let pipe = &pipes[&model];
        let mut gc = case["config"].clone();
        if let Some(o) = gc.as_object_mut() {
            o.insert("max_new_tokens".into(), 12.into());
            o.insert("do_sample".into(), false.into());
            let pad = if model == "llama" { 2 } else { 0 };
            o.insert("pad_token_id".into(), pad.into());
        }
        let overrides = GenerationConfig::from_json(&gc, UnknownFields::Reject)?;
        let input = lmgen::GenerateInput {
            input_ids: serde_json::from_value(case["input_ids"].clone())?,
            attention_mask: Some(serde_json::from_value(case["attention_mask"].clone())?),
        };
        let want: Vec<Vec<TokenId>> = serde_json::from_value(case["sequences"].clone())?;
        let got = pipe.generate(&input, &overrides)?.sequences;
        if got != want {
            failures.push(format!(
                "{model} {}: got {got:?} want {want:?}",
                case["config"]
            ));
        }
    }
    assert!(
        cases.len() >= 18 && failures.is_empty(),
        "{}",
        failures.join("\n")
    );
    Ok(())
}
