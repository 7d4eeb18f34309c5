//! Real checkpoint layouts that the tiny golden-arch models do not show, against transformers 5.17
//! reading the same files (`fixtures/transformers_extra/make_arch.py`): Phi-4-mini's LongRoPE with
//! partial rotary in the transformers 4 form, run past the original context and crossing it while
//! decoding (against transformers' generate without a cache: at the crossing lmgen runs the whole
//! sequence again, as `Phi3ForCausalLM.prepare_inputs_for_generation` intends; transformers 5.17
//! drops the cache there but then feeds only the newest token, losing the context, a deliberate
//! difference); Gemma 3 in the transformers 4 form (`rope_theta` + linear `rope_scaling` on full
//! layers, `rope_local_base_freq`, `sliding_window_pattern`); Qwen3 with sliding layers from
//! `max_window_layers`; Ministral 3 with its query scaling and YaRN varying inside the prompt.

use std::path::{Path, PathBuf};

use lmgen::generation::config::UnknownFields;
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, LoadOptions};
use lmgen::{generate, GenerateInput, GenerationConfig};
use serde::Deserialize;

mod common;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformers_extra")
}

#[derive(Deserialize)]
struct Case {
    name: String,
    prompt: Vec<u32>,
    logits: Vec<Vec<f32>>,
    greedy_input: Vec<u32>,
    greedy: Vec<u32>,
}

#[test]
fn real_layouts_match_transformers() -> anyhow::Result<()> {
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("arch.json"))?)?;
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "phi3_longrope",
            "gemma3_v4",
            "qwen3_sliding",
            "ministral3_scaled"
        ]
    );
    let mut failures = Vec::new();
    for case in &cases {
        let checkpoint = Checkpoint::open(&fixtures().join("arch").join(&case.name))?;
        let model = load_model(&checkpoint, &LoadOptions::default())?;
        let got: Vec<Vec<f32>> = common::all_logits(model.as_ref(), &case.prompt)?.to_vec2()?;
        let diff = common::max_abs_diff(&got, &case.logits);
        if diff > 1e-4 {
            failures.push(format!(
                "{}: max |logit difference| {diff} > 1e-4",
                case.name
            ));
        }
        // The checkpoint's generation_config.json (its eos_token_id, which min_new_tokens
        // suppresses) with the case's settings on top, as transformers merges them.
        let dir = fixtures().join("arch").join(&case.name);
        let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            dir.join("generation_config.json"),
        )?)?;
        for (k, v) in [
            ("do_sample", serde_json::json!(false)),
            ("max_new_tokens", serde_json::json!(24)),
            ("min_new_tokens", serde_json::json!(24)),
            ("pad_token_id", serde_json::json!(0)),
        ] {
            json[k] = v;
        }
        let config = GenerationConfig::from_json(&json, UnknownFields::Keep)?;
        let input = GenerateInput {
            input_ids: vec![case.greedy_input.clone()],
            attention_mask: None,
        };
        let seq = generate(model.as_ref(), &input, &config)?.sequences;
        if seq[0] != case.greedy {
            failures.push(format!(
                "{}: greedy\n  got  {:?}\n  want {:?}",
                case.name, seq[0], case.greedy
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// A decoding mode that cannot run the whole sequence again refuses the crossing, naming why;
/// one that stays within the original context runs.
#[test]
fn longrope_crossing_is_refused_where_not_implemented() -> anyhow::Result<()> {
    let checkpoint = Checkpoint::open(&fixtures().join("arch").join("phi3_longrope"))?;
    let model = load_model(&checkpoint, &LoadOptions::default())?;
    let input = GenerateInput {
        input_ids: vec![(3..23).collect()],
        attention_mask: None,
    };
    let contrastive = |max_new_tokens: usize| {
        GenerationConfig::from_json(
            &serde_json::json!({"penalty_alpha": 0.6, "top_k": 4,
                "max_new_tokens": max_new_tokens, "pad_token_id": 0}),
            UnknownFields::Reject,
        )
    };
    let err = generate(model.as_ref(), &input, &contrastive(24)?)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("runs the whole sequence again once it passes 32 tokens"),
        "{err}"
    );
    generate(model.as_ref(), &input, &contrastive(12)?)?;
    Ok(())
}
