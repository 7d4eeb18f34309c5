//! Streaming and sampling through `generate()`: the streamer sees what transformers'
//! TextIteratorStreamer yields during a greedy run (streaming.json), and a seed fixes samples.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};

use lmgen::generation::config::UnknownFields;
use lmgen::generation::streamer::{TextStreamer, TextStreamerOptions};
use lmgen::generation::GenerateOptions;
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::{json, Value};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn pipeline(model: &str) -> Pipeline {
    Pipeline::from_pretrained(golden().join("models").join(model).to_str().unwrap()).unwrap()
}

#[test]
fn streamed_chunks_match_transformers_during_generate() {
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(golden().join("streaming.json")).unwrap())
            .unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let model = case["model"].as_str().unwrap();
        let pipe = pipeline(model);
        let ids: Vec<Vec<u32>> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        let overrides = GenerationConfig::from_json(
            &json!({"do_sample": false, "max_new_tokens": 30}),
            UnknownFields::Reject,
        )
        .unwrap();
        let mut chunks = Vec::new();
        let mut streamer = TextStreamer::new(
            pipe.tokenizer.clone(),
            TextStreamerOptions {
                skip_prompt: true,
                skip_special_tokens: true,
            },
            |text: &str, _end: bool| chunks.push(text.to_string()),
        );
        let input = GenerateInput {
            input_ids: ids,
            attention_mask: None,
        };
        let options = GenerateOptions {
            streamer: Some(&mut streamer),
            ..GenerateOptions::default()
        };
        let out = pipe.generate_with(&input, &overrides, options).unwrap();
        drop(streamer);
        let want: Vec<String> = serde_json::from_value(case["chunks"].clone()).unwrap();
        let non_empty = |v: &[String]| {
            v.iter()
                .filter(|c| !c.is_empty())
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(non_empty(&chunks), non_empty(&want), "{model}");
        let seq: Vec<u32> = serde_json::from_value(case["sequence"].clone()).unwrap();
        assert_eq!(out.sequences[0], seq, "{model}");
    }
}

#[test]
fn streaming_a_batch_is_an_error() {
    let pipe = pipeline("llama");
    let mut streamer = TextStreamer::new(
        pipe.tokenizer.clone(),
        TextStreamerOptions::default(),
        |_: &str, _: bool| {},
    );
    let input = GenerateInput::left_padded(vec![vec![1, 5, 6], vec![1, 7]], 2);
    let options = GenerateOptions {
        streamer: Some(&mut streamer),
        ..GenerateOptions::default()
    };
    let err = pipe
        .generate_with(&input, &GenerationConfig::default(), options)
        .unwrap_err();
    assert!(err.to_string().contains("batch size 1"), "{err}");
}

fn sample(pipe: &Pipeline, seed: u64, extra: Value) -> Vec<Vec<u32>> {
    let mut fields = json!({"do_sample": true, "max_new_tokens": 12});
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    let overrides = GenerationConfig::from_json(&fields, UnknownFields::Reject).unwrap();
    let options = GenerateOptions {
        seed: Some(seed),
        ..GenerateOptions::default()
    };
    pipe.generate_with(
        &GenerateInput::single(vec![1, 56, 386, 225]),
        &overrides,
        options,
    )
    .unwrap()
    .sequences
}

#[test]
fn same_seed_same_samples_and_return_sequences_differ() {
    let pipe = pipeline("llama");
    assert_eq!(sample(&pipe, 7, json!({})), sample(&pipe, 7, json!({})));
    assert_ne!(sample(&pipe, 7, json!({})), sample(&pipe, 8, json!({})));
    let many = sample(&pipe, 7, json!({"num_return_sequences": 3}));
    assert_eq!(many.len(), 3);
    assert!(many.iter().all(|r| r[..4] == [1, 56, 386, 225]));
    assert!(
        many[0] != many[1] || many[1] != many[2],
        "independent samples"
    );
}

#[test]
fn top_k_one_sampling_equals_greedy() {
    let pipe = pipeline("llama");
    let greedy = pipe
        .generate(
            &GenerateInput::single(vec![1, 56, 386, 225]),
            &GenerationConfig::from_json(&json!({"max_new_tokens": 12}), UnknownFields::Reject)
                .unwrap(),
        )
        .unwrap()
        .sequences;
    assert_eq!(sample(&pipe, 3, json!({"top_k": 1})), greedy);
}
