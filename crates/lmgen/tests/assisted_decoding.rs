//! Assisted decoding beyond the golden cases: universal assisted decoding (a draft with another
//! vocabulary, re-encoding through text) reproduces greedy decoding, sampling with a draft runs, and
//! invalid uses are errors naming the problem.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use lmgen::generation::config::UnknownFields;
use lmgen::generation::GenerateOptions;
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::{json, Value};
use tempfile::TempDir;

fn golden(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/models")
        .join(model)
}

fn load(dir: &Path) -> Pipeline {
    Pipeline::from_pretrained(dir.to_str().unwrap()).unwrap()
}

fn config(fields: Value) -> GenerationConfig {
    GenerationConfig::from_json(&fields, UnknownFields::Reject).unwrap()
}

const PROMPT: [u32; 10] = [1, 420, 311, 659, 706, 278, 341, 451, 617, 325];

/// The golden llama with its vocabulary padded from 800 to 832 rows (as checkpoints pad their
/// embeddings to a multiple of 64): another `vocab_size`, so transformers (and lmgen) treat its
/// tokenizer as a different one. The padding rows copy row 0, so they never win an argmax.
fn padded_llama() -> TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = golden("llama");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["vocab_size"] = json!(832);
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let padded: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(name, t)| {
            let t = if name == "model.embed_tokens.weight" || name == "lm_head.weight" {
                let pad = t.narrow(0, 0, 1).unwrap().repeat((32, 1)).unwrap();
                Tensor::cat(&[&t, &pad], 0).unwrap()
            } else {
                t
            };
            (name, t)
        })
        .collect();
    candle_core::safetensors::save(&padded, tmp.path().join("model.safetensors")).unwrap();
    tmp
}

#[test]
fn universal_assisted_decoding_reproduces_greedy() {
    let target = load(&golden("llama"));
    let dir = padded_llama();
    let draft = load(dir.path());
    let input = GenerateInput::single(PROMPT.to_vec());
    let overrides = config(
        json!({"max_new_tokens": 24, "num_assistant_tokens": 5, "assistant_confidence_threshold": 0.0}),
    );
    let plain = target.generate(&input, &overrides).unwrap();
    let out = target
        .generate_with(&input, &overrides, target.assisted_by(&draft))
        .unwrap();
    assert_eq!(out.sequences, plain.sequences);
    let stats = out.assisted.unwrap();
    // Drafts went through text both ways. Few are accepted: this random model's greedy output is
    // byte-fallback pieces (`<0xA8>`), runs of spaces and special tokens that do not survive
    // decoding and re-encoding, as in transformers.
    assert!(stats.drafted > 0 && stats.rounds < 24, "{stats:?}");
    // The heuristic schedule changes the draft lengths, not the output.
    let heuristic =
        config(json!({"max_new_tokens": 12, "num_assistant_tokens_schedule": "heuristic"}));
    let plain = target.generate(&input, &heuristic).unwrap();
    let out = target
        .generate_with(&input, &heuristic, target.assisted_by(&draft))
        .unwrap();
    assert_eq!(out.sequences, plain.sequences);
}

#[test]
fn sampling_with_each_draft_runs_and_is_seeded() {
    let target = load(&golden("llama"));
    let draft = load(&golden("llama-draft"));
    let input = GenerateInput::single(PROMPT.to_vec());
    let cases = [
        json!({"do_sample": true, "max_new_tokens": 16}),
        json!({"do_sample": true, "max_new_tokens": 16, "prompt_lookup_num_tokens": 3}),
        json!({"do_sample": true, "max_new_tokens": 16, "assistant_early_exit": 1}),
    ];
    for (i, fields) in cases.iter().enumerate() {
        let overrides = config(fields.clone());
        let run = |seed| {
            let mut options = if i == 0 {
                target.assisted_by(&draft)
            } else {
                GenerateOptions::default()
            };
            options.seed = Some(seed);
            target.generate_with(&input, &overrides, options).unwrap()
        };
        let (a, b) = (run(5), run(5));
        assert_eq!(a.sequences, b.sequences, "{fields}: same seed, same tokens");
        assert_eq!(a.sequences[0].len(), PROMPT.len() + 16, "{fields}");
        assert!(a.assisted.is_some(), "{fields}");
    }
}

fn error_of(result: lmgen::Result<lmgen::GenerateOutput>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn invalid_uses_are_rejected_naming_the_problem() {
    let target = load(&golden("llama"));
    let draft = load(&golden("llama-draft"));
    let dir = padded_llama();
    let other_vocab = load(dir.path());
    let one = GenerateInput::single(PROMPT.to_vec());
    let greedy = config(json!({"max_new_tokens": 4}));

    // A draft with another vocabulary and no assistant tokenizer.
    let options = GenerateOptions {
        assistant_model: Some(other_vocab.model.as_ref()),
        ..GenerateOptions::default()
    };
    let msg = error_of(target.generate_with(&one, &greedy, options));
    assert!(
        msg.contains("different tokenizers")
            && msg.contains("`assistant_tokenizer`")
            && msg.contains("832"),
        "{msg}"
    );

    // An assistant tokenizer for a draft with the same vocabulary.
    let options = GenerateOptions {
        assistant_model: Some(draft.model.as_ref()),
        assistant_tokenizer: Some(&draft.tokenizer),
        ..GenerateOptions::default()
    };
    let msg = error_of(target.generate_with(&one, &greedy, options));
    assert!(
        msg.contains("`assistant_tokenizer` is not required"),
        "{msg}"
    );

    // Beams.
    let beams = config(json!({"max_new_tokens": 4, "num_beams": 2}));
    let msg = error_of(target.generate_with(&one, &beams, target.assisted_by(&draft)));
    assert!(
        msg.contains("greedy search and sampling only") && msg.contains("`num_beams=2`"),
        "{msg}"
    );
    let lookup_beams =
        config(json!({"max_new_tokens": 4, "num_beams": 2, "prompt_lookup_num_tokens": 3}));
    let msg = error_of(target.generate(&one, &lookup_beams));
    assert!(
        msg.contains("`prompt_lookup_num_tokens`") && msg.contains("num_beams"),
        "{msg}"
    );

    // Batch size > 1, num_return_sequences > 1.
    let two = GenerateInput::left_padded(vec![PROMPT.to_vec(), PROMPT[..6].to_vec()], 2);
    let msg = error_of(target.generate_with(&two, &greedy, target.assisted_by(&draft)));
    assert!(
        msg.contains("batch size 1") && msg.contains("2 prompts"),
        "{msg}"
    );
    let lookup = config(json!({"max_new_tokens": 4, "prompt_lookup_num_tokens": 3}));
    let msg = error_of(target.generate(&two, &lookup));
    assert!(msg.contains("batch size 1"), "{msg}");
    let n = config(json!({"max_new_tokens": 4, "do_sample": true, "num_return_sequences": 2}));
    let msg = error_of(target.generate_with(&one, &n, target.assisted_by(&draft)));
    assert!(msg.contains("`num_return_sequences` has to be 1"), "{msg}");

    // Out-of-range settings.
    for (fields, expected) in [
        (
            json!({"assistant_early_exit": 3}),
            "`assistant_early_exit` must be between 1 and",
        ),
        (
            json!({"assistant_early_exit": 0}),
            "`assistant_early_exit` must be between 1 and",
        ),
        (
            json!({"prompt_lookup_num_tokens": 0}),
            "`prompt_lookup_num_tokens` (0)",
        ),
        (
            json!({"prompt_lookup_num_tokens": 2, "max_matching_ngram_size": 0}),
            "`max_matching_ngram_size` (0)",
        ),
        (
            json!({"prompt_lookup_num_tokens": 2, "use_cache": false}),
            "requires `use_cache=true`",
        ),
        (
            json!({"prompt_lookup_num_tokens": 2, "guidance_scale": 1.5}),
            "`guidance_scale`",
        ),
        (json!({"use_mtp": true}), "`use_mtp`"),
    ] {
        let msg = error_of(target.generate(&one, &config(fields.clone())));
        assert!(msg.contains(expected), "{fields}: {msg}");
    }
    let schedule = config(json!({"num_assistant_tokens_schedule": "linear"}));
    let msg = error_of(target.generate_with(&one, &schedule, target.assisted_by(&draft)));
    assert!(
        msg.contains("`num_assistant_tokens_schedule` must be"),
        "{msg}"
    );
    let both = config(json!({"prompt_lookup_num_tokens": 2}));
    let msg = error_of(target.generate_with(&one, &both, target.assisted_by(&draft)));
    assert!(msg.contains("two different drafts"), "{msg}");
}

#[test]
fn a_left_padded_single_prompt_decodes_as_greedy() {
    let target = load(&golden("llama"));
    let draft = load(&golden("llama-draft"));
    let padded = GenerateInput {
        input_ids: vec![[vec![2, 2, 2], PROMPT.to_vec()].concat()],
        attention_mask: Some(vec![[vec![0, 0, 0], vec![1; PROMPT.len()]].concat()]),
    };
    let overrides = config(json!({"max_new_tokens": 12, "pad_token_id": 2}));
    let plain = target.generate(&padded, &overrides).unwrap();
    let out = target
        .generate_with(&padded, &overrides, target.assisted_by(&draft))
        .unwrap();
    assert_eq!(out.sequences, plain.sequences);
    let lookup =
        config(json!({"max_new_tokens": 12, "pad_token_id": 2, "prompt_lookup_num_tokens": 2}));
    assert_eq!(
        target.generate(&padded, &lookup).unwrap().sequences,
        plain.sequences
    );
}
