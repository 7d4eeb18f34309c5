//! Reasoning end to end on published chat templates (`fixtures/chat_templates/real/`) served
//! with the golden tiny Llama: a GBNF `grammar` makes the model think in the template's markers
//! (`<think>` the output opens, `<think>` the prompt opens, Magistral's `[THINK]`), and
//! `reasoning_tokens` in `usage` is checked against a count made here from the answer's own
//! token list (`logprobs`): every token up to the one that completes the closing marker.
//! Driven in process, as `tool_formats.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use serde_json::{json, Value};

use common::{InProcess, FIXTURES};

/// The golden tiny Llama with `template` (a fixture by name, or a file here) as its chat
/// template and a 4096-token context.
fn checkpoint(template: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(FIXTURES).join("golden/models/llama");
    for entry in std::fs::read_dir(model).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let source = match template.strip_suffix(".jinja") {
        Some(_) => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(template),
        None => {
            let real = Path::new(FIXTURES).join(format!("chat_templates/real/{template}.jinja"));
            match real.exists() {
                true => real,
                false => Path::new(FIXTURES).join(format!("chat_templates/{template}.jinja")),
            }
        }
    };
    std::fs::copy(source, dir.path().join("chat_template.jinja")).unwrap();
    let config_path = dir.path().join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["max_position_embeddings"] = json!(4096);
    std::fs::write(&config_path, config.to_string()).unwrap();
    dir
}

fn serve(template: &str) -> (tempfile::TempDir, InProcess) {
    let dir = checkpoint(template);
    let argv = [
        "serve",
        "--model",
        dir.path().to_str().unwrap(),
        "--served-model-name",
        "tiny",
        "--kv-cache-tokens",
        "16384",
    ];
    let server = InProcess::start(&argv, 1 << 20);
    (dir, server)
}

fn post(server: &InProcess, path: &str, body: &Value) -> (u16, String) {
    let (status, _, text) = server.post(path, "application/json", body.to_string().into_bytes());
    (status.as_u16(), text)
}

fn post_ok(server: &InProcess, path: &str, body: &Value) -> Value {
    let (status, text) = post(server, path, body);
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// The events of an SSE answer (`data:` lines as JSON; `[DONE]` left out).
fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// The reasoning tokens of generated `tokens` (each token's bytes), counted here: with the
/// reasoning opened by the prompt or by the text's start (`open`), every token up to and with
/// the one that completes `close`; all of them when it never closes.
fn count_reasoning(tokens: &[Vec<u8>], opened_by_prompt: bool, open: &str, close: &str) -> usize {
    let mut text = Vec::new();
    for (k, t) in tokens.iter().enumerate() {
        text.extend_from_slice(t);
        if String::from_utf8_lossy(&text).contains(close) {
            return k + 1;
        }
    }
    match opened_by_prompt || String::from_utf8_lossy(&text).starts_with(open) {
        true => tokens.len(),
        false => 0,
    }
}

fn token_bytes(choice: &Value) -> Vec<Vec<u8>> {
    choice["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect()
        })
        .collect()
}

#[test]
fn reasoning_tokens_count_the_tokens_inside_the_markers() {
    // (template, kwargs, GBNF, opened by the prompt, markers, reasoning and content patterns)
    let cases = [
        (
            "qwen3",
            json!({}),
            r#"root ::= "<think>" [a-z ]{4,12} "</think>" "\n\n" [a-z]{2,6}"#,
            false,
            ("<think>", "</think>"),
        ),
        (
            "deepseek_r1_distill_qwen",
            json!({"enable_thinking": true}),
            r#"root ::= [a-z ]{4,12} "</think>" "\n\n" [a-z]{2,6}"#,
            true,
            ("<think>", "</think>"),
        ),
        (
            "ministral3_reasoning",
            json!({}),
            r#"root ::= "[THINK]" [a-z ]{4,12} "[/THINK]" [a-z]{2,6}"#,
            false,
            ("[THINK]", "[/THINK]"),
        ),
        // gpt-oss's harmony: the `analysis` message, header and `<|end|>` included.
        (
            "gpt_oss",
            json!({}),
            r#"root ::= "<|channel|>analysis<|message|>" [a-z ]{4,12} "<|end|><|start|>assistant<|channel|>final<|message|>" [a-z]{2,6}"#,
            false,
            ("<|channel|>analysis", "<|end|>"),
        ),
    ];
    for (template, kwargs, gbnf, opened, (open, close)) in cases {
        let (_dir, server) = serve(template);
        for seed in 0..3 {
            let body = json!({
                "model": "tiny", "messages": [{"role": "user", "content": "Think first."}],
                "grammar": gbnf, "temperature": 1.0, "seed": seed, "max_tokens": 120,
                "logprobs": true, "chat_template_kwargs": kwargs,
            });
            let answer = post_ok(&server, "/v1/chat/completions", &body);
            let choice = &answer["choices"][0];
            assert_eq!(choice["finish_reason"], "stop", "{template}: {answer}");
            let message = &choice["message"];
            let reasoning = message["reasoning_content"].as_str().unwrap();
            let content = message["content"].as_str().unwrap();
            assert!(
                (4..=12).contains(&reasoning.len())
                    && reasoning
                        .bytes()
                        .all(|b| b == b' ' || b.is_ascii_lowercase()),
                "{template}: {message}"
            );
            assert!((2..=6).contains(&content.len()), "{template}: {message}");
            let tokens = token_bytes(choice);
            let usage = &answer["usage"];
            assert_eq!(
                usage["completion_tokens"],
                tokens.len(),
                "{template}: {answer}"
            );
            let expected = count_reasoning(&tokens, opened, open, close);
            assert!(
                expected > 0 && expected < tokens.len(),
                "{template}: {expected}"
            );
            assert_eq!(
                usage["completion_tokens_details"]["reasoning_tokens"], expected,
                "{template}: {answer}"
            );
            // Streamed: the usage chunk says the same.
            let mut streamed = body.clone();
            streamed["stream"] = json!(true);
            streamed["stream_options"] = json!({"include_usage": true});
            let (status, text) = post(&server, "/v1/chat/completions", &streamed);
            assert_eq!(status, 200, "{text}");
            let last = events(&text).pop().unwrap();
            assert_eq!(last["choices"], json!([]), "{last}");
            assert_eq!(last["usage"], *usage, "{template}: {last}");
        }
    }
}

#[test]
fn no_reasoning_counts_zero_and_completions_have_no_details() {
    let (_dir, server) = serve("qwen3");
    // Thinking off: the prompt closes `<think>`, so nothing is reasoning.
    let body = json!({
        "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
        "temperature": 0, "chat_template_kwargs": {"enable_thinking": false},
    });
    let answer = post_ok(&server, "/v1/chat/completions", &body);
    assert_eq!(
        answer["usage"]["completion_tokens_details"],
        json!({"reasoning_tokens": 0}),
        "{answer}"
    );
    let body = json!({"model": "tiny", "prompt": "<think>", "max_tokens": 4});
    let answer = post_ok(&server, "/v1/completions", &body);
    assert!(
        answer["usage"].get("completion_tokens_details").is_none(),
        "{answer}"
    );
}

#[test]
fn responses_count_reasoning_tokens_as_chat_does() {
    // A Qwen-style template whose generation prompt opens `<think>` (as the openai_client tests'):
    // unless the greedy text closes it, it is all reasoning.
    let (_dir, server) = serve("hermes_tools.jinja");
    let messages = json!([{"role": "user", "content": "Why?"}]);
    let chat = post_ok(
        &server,
        "/v1/chat/completions",
        &json!({"model": "tiny", "messages": messages, "max_tokens": 12, "temperature": 0,
                "logprobs": true}),
    );
    let tokens = token_bytes(&chat["choices"][0]);
    let expected = count_reasoning(&tokens, true, "<think>", "</think>");
    assert!(expected > 0, "{chat}");
    assert_eq!(
        chat["usage"]["completion_tokens_details"]["reasoning_tokens"],
        expected
    );
    let body =
        json!({"model": "tiny", "input": messages, "max_output_tokens": 12, "temperature": 0});
    let (status, text) = post(&server, "/v1/responses", &body);
    assert_eq!(status, 200, "{text}");
    let response: Value = serde_json::from_str(&text).unwrap();
    let usage = &response["usage"];
    assert_eq!(usage["output_tokens"], tokens.len(), "{response}");
    assert_eq!(
        usage["output_tokens_details"]["reasoning_tokens"], expected,
        "{response}"
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, text) = post(&server, "/v1/responses", &streamed);
    assert_eq!(status, 200, "{text}");
    let last = events(&text).pop().unwrap();
    assert_eq!(last["response"]["usage"], *usage, "{last}");
}

#[test]
fn thinking_blocks_sent_back_reach_the_template_as_reasoning_content() {
    // Qwen3's template renders an assistant turn's `reasoning_content` after the last user query.
    let (_dir, server) = serve("qwen3");
    let tools = json!([{"name": "get_time", "input_schema": {"type": "object"}}]);
    let turns = |assistant: Value| {
        json!([
            {"role": "user", "content": "Time?"},
            {"role": "assistant", "content": assistant},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "9:00"}]},
        ])
    };
    let call = json!({"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}});
    let thinking = json!({"type": "thinking", "thinking": "The clock tool.", "signature": ""});
    let input_tokens = |assistant: Value| {
        let body =
            json!({"model": "tiny", "max_tokens": 1, "tools": tools, "messages": turns(assistant)});
        post_ok(&server, "/v1/messages", &body)["usage"]["input_tokens"].clone()
    };
    // (With text: Qwen3's template cannot read a `null` content.)
    let text = json!({"type": "text", "text": "Checking."});
    let with = input_tokens(json!([thinking, text, call]));
    let without = input_tokens(json!([text, call]));
    // The chat endpoint's prompt for the same turns with `reasoning_content`.
    let chat = json!({"model": "tiny", "max_tokens": 1, "messages": [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": "Checking.", "reasoning_content": "The clock tool.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_time", "arguments": {}}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "9:00"},
    ], "tools": [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]});
    let chat = post_ok(&server, "/v1/chat/completions", &chat);
    assert_eq!(with, chat["usage"]["prompt_tokens"], "{chat}");
    assert!(with.as_u64() > without.as_u64(), "{with} {without}");
}

#[test]
fn thinking_budget_closes_the_reasoning_after_exactly_that_many_tokens() {
    // The prompt opens `<think>` and the tiny model never closes it by itself (the chat endpoint
    // shows it): with `budget_tokens`, the thinking block is the chat endpoint's reasoning of
    // exactly that many tokens, and an answer follows.
    let (_dir, server) = serve("hermes_tools.jinja");
    let messages = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    let budget = 1024;
    let chat = post_ok(
        &server,
        "/v1/chat/completions",
        &json!({"model": "tiny", "messages": messages, "max_tokens": budget, "temperature": 0}),
    );
    let message = &chat["choices"][0]["message"];
    assert_eq!(chat["choices"][0]["finish_reason"], "length");
    assert!(message["content"].is_null(), "{chat}");
    let body = json!({"model": "tiny", "messages": messages, "max_tokens": budget + 40, "temperature": 0,
                      "thinking": {"type": "enabled", "budget_tokens": budget}});
    let answer = post_ok(&server, "/v1/messages", &body);
    let content = answer["content"].as_array().unwrap();
    assert_eq!(content[0]["type"], "thinking", "{answer}");
    assert_eq!(content[0]["thinking"], message["reasoning_content"]);
    assert_eq!(content[0]["signature"], "");
    assert_eq!(content[1]["type"], "text", "{answer}");
    assert!(!content[1]["text"].as_str().unwrap().is_empty(), "{answer}");
    // Streamed alike: the thinking deltas, then the signature, then the text.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, text) = post(&server, "/v1/messages", &streamed);
    assert_eq!(status, 200, "{text}");
    let events = events(&text);
    let deltas = |kind: &str, key: &str| -> String {
        events
            .iter()
            .filter(|e| e["delta"]["type"] == kind)
            .map(|e| e["delta"][key].as_str().unwrap())
            .collect()
    };
    assert_eq!(
        deltas("thinking_delta", "thinking"),
        content[0]["thinking"].as_str().unwrap()
    );
    assert_eq!(
        deltas("text_delta", "text"),
        content[1]["text"].as_str().unwrap()
    );
    let at = events
        .iter()
        .position(|e| e["delta"]["type"] == "signature_delta")
        .unwrap();
    assert_eq!(
        events[at + 1],
        json!({"type": "content_block_stop", "index": 0})
    );
}
