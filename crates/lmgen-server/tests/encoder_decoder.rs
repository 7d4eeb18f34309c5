//! An encoder-decoder model behind the server: `/v1/completions` reads the prompt as the
//! encoder's input and answers transformers' greedy tokens (the golden T5 case), streamed or
//! not; chat without a chat template is a 400 that says so.
//!
//! One in-process server over the golden tiny T5, driven with `tower::ServiceExt::oneshot`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::http::StatusCode;
use serde_json::{json, Value};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lmgen/tests/fixtures/golden-seq2seq")
}

fn server() -> &'static common::InProcess {
    static SERVER: OnceLock<common::InProcess> = OnceLock::new();
    SERVER.get_or_init(|| {
        let model = golden().join("models/t5");
        let argv = [
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--served-model-name",
            "t5",
        ];
        common::InProcess::start(&argv, 1 << 20)
    })
}

/// POSTs the JSON `body` to `path`: the status and the body.
fn post(path: &str, body: &Value) -> (StatusCode, String) {
    let (status, _, text) = server().post(path, "application/json", body.to_string().into_bytes());
    (status, text)
}

/// The golden `t5_greedy` case: its prompt and transformers' text for it.
fn greedy_case() -> (String, String, usize) {
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(golden().join("generate.json")).unwrap())
            .unwrap();
    let case = cases.iter().find(|c| c["name"] == "t5_greedy").unwrap();
    let prompt = case["prompts"][0].as_str().unwrap().to_string();
    let sequence: Vec<u32> =
        serde_json::from_value(case["expected"]["sequences"][0].clone()).unwrap();
    let tokenizer = lmgen::Tokenizer::from_dir(&golden().join("models/t5")).unwrap();
    let text = tokenizer.decode(&sequence[1..], true).unwrap();
    let prompt_tokens = case["encoder_input_ids"][0].as_array().unwrap().len();
    (prompt, text, prompt_tokens)
}

#[test]
fn completions_give_transformers_greedy_text() {
    let (prompt, want, prompt_tokens) = greedy_case();
    let body = json!({"model": "t5", "prompt": prompt, "max_tokens": 20, "temperature": 0});
    let (status, text) = post("/v1/completions", &body);
    assert_eq!(status, StatusCode::OK, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["choices"][0]["text"], want, "{answer}");
    assert_eq!(answer["usage"]["prompt_tokens"], prompt_tokens, "{answer}");

    // Streamed: the chunks add up to the same text.
    let mut streamed_body = body.clone();
    streamed_body["stream"] = json!(true);
    let (status, text) = post("/v1/completions", &streamed_body);
    assert_eq!(status, StatusCode::OK, "{text}");
    let streamed: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| {
            let chunk: Value = serde_json::from_str(d).unwrap();
            chunk["choices"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(streamed, want);
}

#[test]
fn chat_without_a_template_is_refused_clearly() {
    let body = json!({"model": "t5", "messages": [{"role": "user", "content": "hi"}]});
    let (status, text) = post("/v1/chat/completions", &body);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("template"), "{text}");
}
