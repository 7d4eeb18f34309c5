//! Invalid sampling values get transformers' errors naming the field; a user's own processor and
//! stopping criterion plug into generate().

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::path::Path;

use lmgen::generation::config::UnknownFields;
use lmgen::generation::logits::{LogitsProcessor, Scores};
use lmgen::generation::stopping::{FinishReason, StoppingCriterion};
use lmgen::generation::GenerateOptions;
use lmgen::{GenerateInput, GenerationConfig, Pipeline, TokenId};
use serde_json::{json, Value};

fn pipeline() -> Pipeline {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/models/llama");
    Pipeline::from_pretrained(dir.to_str().unwrap()).unwrap()
}

/// The error of generating with `fields`, whether parsing or generate() rejects them.
fn error(pipe: &Pipeline, fields: Value) -> String {
    let input = GenerateInput::single(vec![1, 56, 386, 225]);
    match GenerationConfig::from_json(&fields, UnknownFields::Reject) {
        Err(e) => e.to_string(),
        Ok(c) => pipe
            .generate(&input, &c)
            .map(|_| ())
            .unwrap_err()
            .to_string(),
    }
}

#[test]
fn invalid_sampling_values_name_the_field() {
    let pipe = pipeline();
    let cases = [
        (json!({"do_sample": true, "top_p": 1.5}), "`top_p`"),
        (json!({"do_sample": true, "top_p": -0.1}), "`top_p`"),
        (
            json!({"do_sample": true, "temperature": -1.0}),
            "`temperature`",
        ),
        (
            json!({"do_sample": true, "temperature": 0.0}),
            "`temperature`",
        ),
        (json!({"do_sample": true, "top_k": -3}), "`top_k`"),
        (json!({"do_sample": true, "min_p": 1.5}), "`min_p`"),
        (json!({"do_sample": true, "typical_p": 0.0}), "`typical_p`"),
        (
            json!({"do_sample": true, "epsilon_cutoff": 1.5}),
            "`epsilon_cutoff`",
        ),
        (json!({"repetition_penalty": 2}), "`repetition_penalty`"),
        (
            json!({"repetition_penalty": "high"}),
            "`repetition_penalty`",
        ),
        (json!({"repetition_penalty": 0.0}), "`repetition_penalty`"),
    ];
    for (fields, field) in cases {
        let msg = error(&pipe, fields.clone());
        assert!(msg.contains(field), "{fields}: {msg}");
    }
}

#[test]
fn sampling_values_while_not_sampling_are_fine() {
    let pipe = pipeline();
    let input = GenerateInput::single(vec![1, 56, 386, 225]);
    let c = GenerationConfig::from_json(
        &json!({"do_sample": false, "top_p": 1.5, "temperature": -1.0, "max_new_tokens": 3}),
        UnknownFields::Reject,
    )
    .unwrap();
    assert!(pipe.generate(&input, &c).is_ok());
}

/// Bans one token everywhere.
struct Ban(TokenId);

impl LogitsProcessor for Ban {
    fn process(&self, _ids: &[Vec<TokenId>], scores: &mut Scores) -> lmgen::Result<()> {
        for i in 0..scores.batch {
            scores.row_mut(i)[self.0 as usize] = f32::NEG_INFINITY;
        }
        Ok(())
    }
}

/// Stops after `n` tokens in total.
struct StopAt(usize);

impl StoppingCriterion for StopAt {
    fn check(&mut self, tokens: &[TokenId]) -> Option<FinishReason> {
        (tokens.len() >= self.0).then_some(FinishReason::StopString)
    }
}

#[test]
fn user_processor_and_criterion_plug_in() {
    let pipe = pipeline();
    let input = GenerateInput::single(vec![1, 56, 386, 225]);
    let config =
        GenerationConfig::from_json(&json!({"max_new_tokens": 10}), UnknownFields::Reject).unwrap();
    let plain = pipe.generate(&input, &config).unwrap();
    let first = plain.generated(0)[0];
    let options = GenerateOptions {
        logits_processors: vec![Box::new(Ban(first))],
        stopping_criteria: vec![Box::new(StopAt(7))],
        ..GenerateOptions::default()
    };
    let out = pipe.generate_with(&input, &config, options).unwrap();
    assert_ne!(out.generated(0)[0], first, "the banned token was generated");
    assert_eq!(out.sequences[0].len(), 7);
    assert_eq!(out.finish_reasons[0], Some(FinishReason::StopString));
}
