//! `lmgen tokenize --request -` (DESIGN.md section 4) and `lmgen chat` (turns piped on stdin).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result};
use lmgen::generation::streamer::{TextStreamer, TextStreamerOptions};
use lmgen::generation::GenerateOptions;
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::{json, Map, Value};

const MODELS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../lmgen/tests/fixtures/golden/models"
);

fn model(name: &str) -> String {
    format!("{MODELS}/{name}")
}

fn lmgen(args: &[&str], stdin: &str) -> Result<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmgen"))
        .args(args)
        .env(
            "HF_HUB_CACHE",
            std::env::temp_dir().join("lmgen-no-hub-cache"),
        )
        .env_remove("LMGEN_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    Ok(child.wait_with_output()?)
}

#[test]
fn tokenize_answers_each_line_in_order() -> Result<()> {
    let lines = [
        json!({"model": model("llama"), "text": "Hello world"}),
        json!({"model": model("qwen2"), "messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": true}),
        json!({"model": model("gemma2"), "messages": [{"role": "system", "content": "x"}], "add_generation_prompt": false}),
        json!({"model": model("llama"), "txt": "typo"}),
        json!({"model": model("llama"), "text": "<|system|>x"}),
    ];
    let stdin: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let out = lmgen(&["tokenize", "--request", "-"], &stdin)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(answers.len(), lines.len());
    assert_eq!(
        answers[0],
        json!({"ids": [1, 686, 749, 687, 696, 380, 308, 274, 507], "decoded": "<s> Hello world", "decoded_skip_special": "Hello world"})
    );
    assert_eq!(
        answers[1],
        json!({"rendered": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"})
    );
    let raised = answers[2]["error"]["message"].as_str().unwrap_or_default();
    assert!(raised.contains("System role not supported"), "{raised}");
    let unknown = answers[3]["error"]["message"].as_str().unwrap_or_default();
    assert!(unknown.contains("unknown field `txt`"), "{unknown}");
    // `<|system|>` is in extra_special_tokens but `special: false` in tokenizer.json: transformers
    // 5.17 keeps it with skip_special_tokens (golden streaming.json), and drops BOS.
    assert_eq!(answers[4]["decoded_skip_special"], json!("<|system|>x"));
    Ok(())
}

/// What `lmgen chat --max-new-tokens N` should print for `turns`: the library's own chat loop.
fn expected_chat(turns: &[&str], max_new_tokens: usize) -> Result<String> {
    let pipe = Pipeline::from_pretrained(&model("llama"))?;
    let overrides = GenerationConfig {
        max_new_tokens: Some(max_new_tokens),
        ..GenerationConfig::default()
    };
    let mut messages: Vec<Value> = Vec::new();
    let mut printed = String::new();
    for turn in turns {
        messages.push(json!({"role": "user", "content": turn}));
        let prompt = pipe
            .tokenizer
            .apply_chat_template(&messages, true, &Map::new())?;
        let ids = pipe.tokenizer.encode_with(&prompt, false)?;
        assert_ne!(
            ids.first(),
            Some(&1),
            "the template, not the tokenizer, writes BOS"
        );
        let options = TextStreamerOptions {
            skip_prompt: true,
            skip_special_tokens: true,
        };
        let mut streamer = TextStreamer::new(pipe.tokenizer.clone(), options, |text: &str, end| {
            printed.push_str(text);
            if end {
                printed.push('\n');
            }
        });
        let out = pipe.generate_with(
            &GenerateInput::single(ids),
            &overrides,
            GenerateOptions {
                streamer: Some(&mut streamer),
                ..GenerateOptions::default()
            },
        )?;
        drop(streamer);
        let reply = pipe.tokenizer.decode(out.generated(0), true)?;
        messages.push(json!({"role": "assistant", "content": reply}));
    }
    Ok(printed)
}

#[test]
fn chat_keeps_the_history_across_turns() -> Result<()> {
    let args = ["chat", "--model", &model("llama"), "--max-new-tokens", "6"];
    let out = lmgen(&args, "Hello?\nAnd then?\n/exit\nnot read\n")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    assert_eq!(stdout, expected_chat(&["Hello?", "And then?"], 6)?);
    Ok(())
}

#[test]
fn chat_reset_forgets_the_history() -> Result<()> {
    let args = ["chat", "--model", &model("llama"), "--max-new-tokens", "4"];
    let out = lmgen(&args, "Hello?\n/reset\nHello?\n")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one = expected_chat(&["Hello?"], 4)?;
    assert_eq!(String::from_utf8(out.stdout)?, format!("{one}{one}"));
    Ok(())
}

#[test]
fn a_tokenizer_folder_renders_with_now_pinning_the_templates_clock() -> Result<()> {
    // A tokenizer repository's files only (no config.json), with gpt-oss's template, which prints
    // today's date: "now" gives transformers' render at that time; without it, the real clock.
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lmgen/tests/fixtures/chat_templates/cases.json"
    ))?)?;
    let case = &golden["cases"][0];
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lmgen/tests/fixtures/chat_templates/gpt_oss.jinja"
    ))?;
    let dir = tempfile::tempdir()?;
    std::fs::copy(
        format!("{}/tokenizer.json", model("llama")),
        dir.path().join("tokenizer.json"),
    )?;
    std::fs::write(dir.path().join("chat_template.jinja"), template)?;
    std::fs::write(dir.path().join("tokenizer_config.json"), "{}")?;
    let clock = golden["clock"].as_i64().context("clock")?;
    assert_eq!(
        clock, 1_785_931_200,
        "the fixture's clock is 2026-08-05T12:00:00Z"
    );
    let request = |now: Option<&str>| {
        let mut r = json!({
            "messages": case["messages"],
            "add_generation_prompt": case["add_generation_prompt"],
        });
        if let Some(now) = now {
            r["now"] = json!(now);
        }
        r.to_string()
    };
    let stdin = [
        request(Some("2026-08-05T12:00:00")),
        request(None),
        request(Some("yesterday")),
    ]
    .join("\n");
    let dir_str = dir.path().to_str().context("path")?;
    let out = lmgen(&["tokenize", "--model", dir_str, "--request", "-"], &stdin)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines[0]["rendered"], case["rendered"], "{}", lines[0]);
    assert_ne!(
        lines[1]["rendered"], case["rendered"],
        "the clock stayed pinned"
    );
    let msg = lines[2]["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("`now`") && msg.contains("yesterday"), "{msg}");
    Ok(())
}

#[test]
fn real_templates_render_through_the_json_lines_interface_as_transformers_renders_them(
) -> Result<()> {
    // The golden renders of tests/chat_template_real.rs, asked of `lmgen tokenize` for a tokenizer
    // folder per family: the special tokens in tokenizer_config.json, `tools`,
    // `chat_template_kwargs` (enable_thinking) and `now` (the fixture's clock) on each line.
    let real = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lmgen/tests/fixtures/chat_templates/real"
    );
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(real)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let file = golden["template"].as_str().context("template")?;
        let dir = tempfile::tempdir()?;
        std::fs::copy(
            format!("{}/tokenizer.json", model("llama")),
            dir.path().join("tokenizer.json"),
        )?;
        std::fs::copy(
            format!("{real}/{file}"),
            dir.path().join("chat_template.jinja"),
        )?;
        let cases = golden["cases"].as_array().context("cases")?;
        let mut special = Map::new();
        let mut lines = Vec::new();
        for case in cases {
            let mut kwargs = case["kwargs"].as_object().cloned().unwrap_or_default();
            for (k, v) in kwargs.clone() {
                if k.ends_with("_token") {
                    special.insert(k.clone(), v);
                    kwargs.remove(&k);
                }
            }
            let mut line = json!({
                "messages": case["messages"],
                "add_generation_prompt": case["add_generation_prompt"],
                "chat_template_kwargs": kwargs,
                "now": "2026-08-05T12:00:00",
            });
            if case["tools"].as_bool() == Some(true) {
                line["tools"] = golden["tools"].clone();
            }
            lines.push(line.to_string());
        }
        assert_eq!(golden["clock"], 1_785_931_200, "2026-08-05T12:00:00Z");
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            Value::Object(special).to_string(),
        )?;
        let dir_str = dir.path().to_str().context("path")?;
        let out = lmgen(
            &["tokenize", "--model", dir_str, "--request", "-"],
            &lines.join("\n"),
        )?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answers: Vec<Value> = String::from_utf8(out.stdout)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        assert_eq!(answers.len(), cases.len(), "{file}");
        for (case, answer) in cases.iter().zip(&answers) {
            let ok = match (case.get("rendered"), case.get("error")) {
                (Some(want), _) => answer.get("rendered") == Some(want),
                // raise_exception's text must be in the error; Python's own errors only have to
                // be errors.
                (None, Some(want)) => answer["error"]["message"].as_str().is_some_and(|m| {
                    case["error_type"] != "TemplateError"
                        || m.contains(want.as_str().unwrap_or_default())
                }),
                _ => false,
            };
            if !ok {
                failures.push(format!("{file}: {}: {answer}", case["name"]));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 250, "only {checked} cases");
    Ok(())
}
