//! Beam search and beam sampling through `generate()` beyond the golden cases: the errors
//! transformers raises (too many return sequences, a streamer with beams) and seeded beam sampling.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};

use lmgen::generation::config::UnknownFields;
use lmgen::generation::streamer::{TextStreamer, TextStreamerOptions};
use lmgen::generation::GenerateOptions;
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::{json, Value};

fn pipeline() -> Pipeline {
    let dir: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/models/llama");
    Pipeline::from_pretrained(dir.to_str().unwrap()).unwrap()
}

fn config(fields: Value) -> GenerationConfig {
    GenerationConfig::from_json(&fields, UnknownFields::Reject).unwrap()
}

fn prompt() -> GenerateInput {
    GenerateInput::single(vec![1, 56, 386, 225])
}

#[test]
fn more_return_sequences_than_beams_is_an_error() {
    let pipe = pipeline();
    let err = pipe
        .generate(
            &prompt(),
            &config(json!({"num_beams": 2, "num_return_sequences": 3, "max_new_tokens": 4})),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`num_return_sequences` (3) must be <= `num_beams` (2)"),
        "{err}"
    );
}

#[test]
fn streaming_with_beams_is_an_error() {
    let pipe = pipeline();
    let mut streamer = TextStreamer::new(
        pipe.tokenizer.clone(),
        TextStreamerOptions::default(),
        |_: &str, _: bool| {},
    );
    let options = GenerateOptions {
        streamer: Some(&mut streamer),
        ..GenerateOptions::default()
    };
    let err = pipe
        .generate_with(
            &prompt(),
            &config(json!({"num_beams": 2, "max_new_tokens": 4})),
            options,
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("a streamer cannot be used with beam search"),
        "{err}"
    );
}

fn beam_sample(pipe: &Pipeline, seed: u64) -> (Vec<Vec<u32>>, Vec<f32>) {
    let options = GenerateOptions {
        seed: Some(seed),
        ..GenerateOptions::default()
    };
    let out = pipe
        .generate_with(
            &prompt(),
            &config(json!({
                "do_sample": true, "num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 8,
            })),
            options,
        )
        .unwrap();
    (out.sequences, out.sequences_scores.unwrap())
}

#[test]
fn beam_sampling_is_seeded_and_sorted() {
    let pipe = pipeline();
    let (seqs, scores) = beam_sample(&pipe, 7);
    assert_eq!(seqs.len(), 2);
    assert!(seqs
        .iter()
        .all(|s| s.len() <= 4 + 8 && s[..4] == [1, 56, 386, 225]));
    assert!(scores[0] >= scores[1], "{scores:?}");
    assert_eq!(beam_sample(&pipe, 7), (seqs, scores));
}

/// transformers' documented invariant: with `normalize_logits=False`,
/// `sum(transition_scores) / generated_len ** length_penalty == sequences_scores`.
#[test]
fn transition_scores_reproduce_sequences_scores() {
    let pipe = pipeline();
    let out = pipe
        .generate(
            &prompt(),
            &config(json!({
                "num_beams": 3, "num_return_sequences": 3, "max_new_tokens": 10,
                "eos_token_id": 337, "length_penalty": 1.5, "output_scores": true,
                "return_dict_in_generate": true,
            })),
        )
        .unwrap();
    let ts = out.compute_transition_scores(false).unwrap();
    let beams = out.beam_indices.as_ref().unwrap();
    let scores = out.sequences_scores.as_ref().unwrap();
    for (i, row) in ts.iter().enumerate() {
        let len = beams[i].iter().filter(|&&b| b >= 0).count() as f32;
        let want = row.iter().sum::<f32>() / len.powf(1.5);
        assert!((want - scores[i]).abs() < 1e-4, "{want} != {}", scores[i]);
    }
}
