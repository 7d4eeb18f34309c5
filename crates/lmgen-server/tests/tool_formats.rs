//! Each tool-call format end to end, on the published chat templates
//! (`fixtures/chat_templates/real/`) served with the golden tiny Llama: the server reads the
//! format from the template, `tool_choice` `"required"` or a named function makes the model write
//! calls in it (the grammar), and the parser reads them back as schema-valid OpenAI calls, streamed
//! (deltas rebuilt by index) as not. Driven in process, as `params.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use serde_json::{json, Value};

use common::{InProcess, FIXTURES};

/// The golden tiny Llama with `template` as its chat template and a 4096-token context.
fn checkpoint(template: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(FIXTURES).join("golden/models/llama");
    for entry in std::fs::read_dir(model).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let source = Path::new(FIXTURES).join(format!("chat_templates/real/{template}.jinja"));
    std::fs::copy(source, dir.path().join("chat_template.jinja")).unwrap();
    let config_path = dir.path().join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["max_position_embeddings"] = json!(4096);
    std::fs::write(&config_path, config.to_string()).unwrap();
    dir
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {
                "city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["c", "f"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 5}},
            "required": ["city", "unit"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {
            "type": "object", "properties": {
                "zone": {"type": "integer", "minimum": -12, "maximum": 12},
                "exact": {"type": "boolean"}},
            "required": ["zone"], "additionalProperties": false}}},
    ])
}

/// `arguments` fits the schema of `name` in [`tools`]: its required keys, its own keys only,
/// each value of its type and within its bounds.
fn check_args(template: &str, name: &str, arguments: &str) {
    let args: Value =
        serde_json::from_str(arguments).unwrap_or_else(|e| panic!("{arguments}: {e}"));
    let args = args.as_object().unwrap();
    // (`-0` is a JSON integer too: serde_json reads it as a float.)
    let int_in = |v: &Value, lo: f64, hi: f64| {
        v.as_f64()
            .is_some_and(|z| z.fract() == 0.0 && (lo..=hi).contains(&z))
    };
    let ok = match name {
        "get_weather" => {
            args.get("city")
                .and_then(Value::as_str)
                .is_some_and(|c| c.chars().count() <= 8)
                && args.get("unit").is_some_and(|u| u == "c" || u == "f")
                && args.get("days").is_none_or(|d| int_in(d, 1.0, 5.0))
                && args
                    .keys()
                    .all(|k| ["city", "unit", "days"].contains(&k.as_str()))
        }
        "get_time" => {
            args.get("zone").is_some_and(|z| int_in(z, -12.0, 12.0))
                && args.get("exact").is_none_or(Value::is_boolean)
                && args.keys().all(|k| ["zone", "exact"].contains(&k.as_str()))
        }
        _ => false,
    };
    assert!(ok, "{template}: {name}({arguments})");
}

/// The calls (name, arguments) and finish reason of a chat answer.
type Answer = (Vec<(String, String)>, String);

fn ask(server: &InProcess, body: &Value) -> Answer {
    let (status, _, text) = server.post(
        "/v1/chat/completions",
        "application/json",
        body.to_string().into_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let choice = &answer["choices"][0];
    let calls = choice["message"]["tool_calls"]
        .as_array()
        .unwrap_or_else(|| panic!("no calls: {answer}"))
        .iter()
        .map(|c| {
            assert!(c["id"].as_str().unwrap().starts_with("call_"), "{c}");
            let f = &c["function"];
            (
                f["name"].as_str().unwrap().to_string(),
                f["arguments"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (calls, choice["finish_reason"].as_str().unwrap().to_string())
}

/// The same, streamed: the calls rebuilt from their deltas by index (the first names the call).
fn ask_streamed(server: &InProcess, body: &Value) -> Answer {
    let mut body = body.clone();
    body["stream"] = json!(true);
    let (status, _, text) = server.post(
        "/v1/chat/completions",
        "application/json",
        body.to_string().into_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    let (mut calls, mut finish): (Vec<(String, String)>, String) = (Vec::new(), String::new());
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        for d in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = d["index"].as_u64().unwrap() as usize;
            let arguments = d["function"]["arguments"].as_str().unwrap_or_default();
            match d["function"]["name"].as_str() {
                Some(name) => {
                    assert_eq!(index, calls.len(), "{d}");
                    calls.push((name.to_string(), arguments.to_string()));
                }
                None => calls[index].1.push_str(arguments),
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (calls, finish)
}

#[test]
fn every_format_round_trips_enforced_calls() {
    for (template, flags) in [
        ("qwen3_5", &[][..]),
        ("gemma4", &[]),
        ("granite3_3", &[]),
        ("lfm2", &[]),
        // Not DeepSeek: its markers (`<｜tool▁calls▁begin｜>`) are special tokens of its own
        // vocabulary; spelled as text in the tiny Llama's, whose decoder turns `▁` into a space,
        // they do not come back (its parser's tests are in `tool_calls::deepseek`).
        // The server's flag in place of the template's (Hermes) format.
        ("qwen2_5", &["--tool-call-parser", "qwen3_coder"]),
    ] {
        let dir = checkpoint(template);
        let mut argv = vec![
            "serve",
            "--model",
            dir.path().to_str().unwrap(),
            "--served-model-name",
            "tiny",
            "--kv-cache-tokens",
            "16384",
        ];
        argv.extend(flags);
        let server = InProcess::start(&argv, 1 << 20);
        let mut names = Vec::new();
        for (seed, choice) in [
            (0, json!("required")),
            (1, json!("required")),
            (
                2,
                json!({"type": "function", "function": {"name": "get_time"}}),
            ),
        ] {
            let body = json!({
                "model": "tiny", "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": tools(), "tool_choice": choice, "parallel_tool_calls": false,
                "temperature": 1.0, "seed": seed, "max_tokens": 300,
            });
            let (calls, finish) = ask(&server, &body);
            assert_eq!(
                (finish.as_str(), calls.len()),
                ("tool_calls", 1),
                "{template}: {calls:?}"
            );
            check_args(template, &calls[0].0, &calls[0].1);
            if choice != "required" {
                assert_eq!(calls[0].0, "get_time", "{template}");
            }
            names.push(calls[0].0.clone());
            assert_eq!(ask_streamed(&server, &body), (calls, finish), "{template}");
        }
        // Parallel calls: as many as fit, each whole one valid.
        let body = json!({
            "model": "tiny", "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": tools(), "tool_choice": "required", "temperature": 1.0, "seed": 3,
            "max_tokens": 200,
        });
        let (calls, finish) = ask(&server, &body);
        let whole = match finish.as_str() {
            "length" => &calls[..calls.len() - 1],
            _ => &calls[..],
        };
        for (name, arguments) in whole {
            check_args(template, name, arguments);
        }
        assert_eq!(ask_streamed(&server, &body), (calls, finish), "{template}");
    }
}
