//! The real server on a free loopback port, driven by the official `openai` Python client
//! (`tests/openai_client.py`): completions, chat and responses, Anthropic's messages with the
//! official `anthropic` client, streaming and not, `n`, seeds, stop strings,
//! logprobs, every error status, SIGTERM draining, and 64 concurrent streaming clients of which a
//! quarter disconnect.
//!
//! The Python interpreter comes from `LMGEN_OPENAI_PYTHON` (CI's `.ci/run` makes a virtual
//! environment with the pinned `openai` and `anthropic` and sets it), else
//! `target/openai-venv/bin/python`. Without either, the tests fail when `CI` is set and are skipped
//! (with the reason printed) otherwise: `python3 -m venv target/openai-venv &&
//! target/openai-venv/bin/pip install openai==3.54.0 anthropic==2.16.0`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lmgen::generation::{log_sum_exp, FinishReason};
use lmgen::{generate, GenerateInput, GenerationConfig, Pipeline};
use serde_json::{json, Value};

const OPENAI_VERSION: &str = "3.54.0";
const ANTHROPIC_VERSION: &str = "2.16.0";
const MAX_BODY_BYTES: usize = 65536;

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lmgen/tests/fixtures/golden/models/llama")
}

fn has_openai(py: &Path) -> bool {
    Command::new(py)
        .args([
            "-c",
            &format!(
                "import anthropic, openai; assert openai.__version__ == '{OPENAI_VERSION}'; \
                 assert anthropic.__version__ == '{ANTHROPIC_VERSION}'"
            ),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python with the pinned `openai`; `None` (test skipped) only outside CI.
fn python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("LMGEN_OPENAI_PYTHON") {
                let p = PathBuf::from(p);
                assert!(
                    has_openai(&p),
                    "LMGEN_OPENAI_PYTHON={} has no openai=={OPENAI_VERSION} and \
                     anthropic=={ANTHROPIC_VERSION}",
                    p.display()
                );
                return Some(p);
            }
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/openai-venv");
            let py = venv.join("bin/python");
            if has_openai(&py) {
                return Some(py);
            }
            let how = format!(
                "no Python with openai=={OPENAI_VERSION} and anthropic=={ANTHROPIC_VERSION}: set \
                 LMGEN_OPENAI_PYTHON, or run `python3 -m venv {0} && {0}/bin/pip install \
                 openai=={OPENAI_VERSION} anthropic=={ANTHROPIC_VERSION}`",
                venv.display()
            );
            assert!(std::env::var_os("CI").is_none(), "CI is set and {how}");
            eprintln!("SKIPPED (the openai client tests): {how}");
            None
        })
        .clone()
}

/// A running `lmgen-server`; killed on drop.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_on(&model_dir(), extra)
    }

    fn start_on(model: &Path, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_lmgen-server"))
            .arg("--model")
            .arg(model)
            .args(["--served-model-name", "tiny-llama", "--port", "0"])
            .args(["--max-body-bytes", &MAX_BODY_BYTES.to_string()])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("lmgen-server listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Server {
            child,
            url,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_no_panic(&self) {
        let log = self.log();
        assert!(!log.contains("panicked"), "panic in the server log:\n{log}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Greedy completions computed with static generate(): what the server must answer.
fn expected() -> Value {
    let pipe = Pipeline::from_pretrained(model_dir().to_str().unwrap()).unwrap();
    let complete_with = |prompt: &str, max_tokens: usize, overrides: GenerationConfig| -> Value {
        let ids = pipe.tokenizer.encode(prompt).unwrap();
        let overrides = GenerationConfig {
            max_new_tokens: Some(max_tokens),
            ..overrides
        };
        complete_ids(&pipe, ids, overrides, json!({"prompt": prompt}))
    };
    let complete = |prompt: &str, max_tokens: usize| -> Value {
        complete_with(prompt, max_tokens, GenerationConfig::default())
    };
    let completions: Vec<Value> = [("Hello world", 12), ("The quick brown fox", 20), ("a", 6)]
        .into_iter()
        .map(|(p, n)| complete(p, n))
        .collect();
    let messages = json!([{"role": "user", "content": "What is the capital of France?"}]);
    let rendered = pipe
        .tokenizer
        .apply_chat_template(messages.as_array().unwrap(), true, &serde_json::Map::new())
        .unwrap();
    let chat_ids = pipe.tokenizer.encode_with(&rendered, false).unwrap();
    let chat = complete_ids(
        &pipe,
        chat_ids,
        GenerationConfig {
            max_new_tokens: Some(10),
            ..GenerationConfig::default()
        },
        json!({"messages": messages}),
    );
    // Hugging Face's multiplicative repetition penalty (prompt included), greedy.
    let mut repetition = complete_with(
        "Hello world",
        24,
        GenerationConfig {
            repetition_penalty: Some(1.5),
            ..GenerationConfig::default()
        },
    );
    repetition["greedy_text"] = complete("Hello world", 24)["text"].clone();
    let words = [
        "Once upon",
        "In a galaxy",
        "Rust is",
        "The weather",
        "My favourite",
        "Numbers:",
        "Hi",
        "Z",
    ];
    let concurrency: Vec<Value> = (0..64)
        .map(|i| complete(&format!("{} {i}", words[i % words.len()]), 8 + i % 17))
        .collect();
    let forced_id = 300u32;
    json!({
        "completions": completions,
        "chat": chat,
        "repetition_penalty": repetition,
        "concurrency": concurrency,
        "context_length": pipe.model.config().max_position_embeddings,
        "max_body_bytes": MAX_BODY_BYTES,
        "forced_token": {"id": forced_id, "text3": pipe.tokenizer.decode(&[forced_id; 3], true).unwrap()},
    })
}

/// Greedy search over `ids` with the checkpoint's config updated by `overrides`.
fn complete_ids(
    pipe: &Pipeline,
    ids: Vec<u32>,
    overrides: GenerationConfig,
    mut case: Value,
) -> Value {
    let max_tokens = overrides.max_new_tokens.unwrap();
    let config = pipe.config_with(&GenerationConfig {
        do_sample: Some(false),
        output_logits: Some(true),
        return_dict_in_generate: Some(true),
        ..overrides
    });
    let out = generate(
        pipe.model.as_ref(),
        &GenerateInput::single(ids.clone()),
        &config,
    )
    .unwrap();
    let new = out.generated(0);
    case["max_tokens"] = json!(max_tokens);
    case["text"] = json!(pipe.tokenizer.decode(new, true).unwrap());
    case["finish_reason"] = json!(match out.finish_reasons[0] {
        Some(FinishReason::Length) => "length",
        _ => "stop",
    });
    // The chosen tokens' log-probabilities: log-softmax of the raw logits.
    let logprobs: Vec<f32> = out
        .logits
        .as_ref()
        .unwrap()
        .iter()
        .zip(new)
        .map(|(step, &t)| step.row(0)[t as usize] - log_sum_exp(step.row(0)))
        .collect();
    case["logprobs"] = json!(logprobs);
    case["prompt_tokens"] = json!(ids.len());
    case["completion_tokens"] = json!(new.len());
    case
}

fn run_python(mode: &str, env: &[(&str, String)]) {
    run_python_with(mode, env, &expected());
}

/// Runs python `mode` with `expected` as its expected answers.
fn run_python_with(mode: &str, env: &[(&str, String)], expected: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let expected_path = dir.path().join("expected.json");
    std::fs::write(&expected_path, expected.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let mut cmd = Command::new(python().unwrap());
    cmd.arg(&script)
        .arg(mode)
        .env("LMGEN_MODEL", "tiny-llama")
        .env("LMGEN_EXPECTED", &expected_path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python {mode} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    println!("{stdout}");
}

#[test]
fn openai_client_completions_chat_and_errors() {
    if python().is_none() {
        return;
    }
    let server = Server::start(&["--kv-cache-tokens", "8192", "--block-size", "8"]);
    // One running and one queued place: the third concurrent request gets 429.
    let small = Server::start(&[
        "--max-running",
        "1",
        "--max-queue",
        "1",
        "--kv-cache-tokens",
        "2048",
    ]);
    run_python(
        "functional",
        &[
            ("LMGEN_BASE_URL", server.url.clone()),
            ("LMGEN_SMALL_URL", small.url.clone()),
        ],
    );
    server.assert_no_panic();
    small.assert_no_panic();
}

/// Runs python `mode` against a server started with `extra`, which it sends SIGTERM; the server
/// must then exit on its own, with status 0 and no panic.
fn sigterm_case(mode: &str, extra: &[&str]) {
    let mut server = Server::start(extra);
    run_python(
        mode,
        &[
            ("LMGEN_BASE_URL", server.url.clone()),
            ("LMGEN_SERVER_PID", server.child.id().to_string()),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after SIGTERM; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        server.log()
    );
    server.assert_no_panic();
}

#[test]
fn sigterm_drains_running_requests_and_refuses_new_ones() {
    if python().is_none() {
        return;
    }
    // One running place: of the four long requests three wait, and must be served all the same.
    sigterm_case(
        "shutdown",
        &[
            "--kv-cache-tokens",
            "4096",
            "--max-running",
            "1",
            "--shutdown-timeout",
            "120",
        ],
    );
}

#[test]
fn sigterm_drain_timeout_cuts_what_is_left() {
    if python().is_none() {
        return;
    }
    sigterm_case(
        "shutdown_timeout",
        &[
            "--kv-cache-tokens",
            "4096",
            "--max-running",
            "1",
            "--shutdown-timeout",
            "0.2",
        ],
    );
}

#[test]
fn sixty_four_streaming_clients_a_quarter_disconnecting() {
    if python().is_none() {
        return;
    }
    // 64 running places; a pool big enough for all of them.
    let server = Server::start(&[
        "--kv-cache-tokens",
        "8192",
        "--block-size",
        "16",
        "--max-running",
        "64",
    ]);
    run_python("concurrency", &[("LMGEN_BASE_URL", server.url.clone())]);
    server.assert_no_panic();
}

/// `client.audio.transcriptions.create` and `translations.create` (multipart upload) against a
/// Whisper checkpoint: the text, segments and language the library gives for the same file.
#[test]
fn openai_client_transcribes_and_translates_audio() {
    if python().is_none() {
        return;
    }
    use lmgen::generation::whisper::WhisperOptions;
    use lmgen_server::api::audio::ResponseFormat;
    let server = Server::start_on(common::whisper_checkpoint(), &[]);
    let plain = WhisperOptions {
        task: Some("transcribe".into()),
        ..WhisperOptions::default()
    };
    let timed = WhisperOptions {
        return_timestamps: Some(true),
        ..plain.clone()
    };
    let translate = WhisperOptions {
        task: Some("translate".into()),
        return_timestamps: Some(true),
        ..WhisperOptions::default()
    };
    let expected = json!({
        "audio": common::audio_path(),
        "json": common::expected_transcription(&plain, "transcribe", ResponseFormat::Json),
        "text": common::expected_transcription(&plain, "transcribe", ResponseFormat::Text),
        "verbose_json": common::expected_transcription(&timed, "transcribe", ResponseFormat::VerboseJson),
        "translation": common::expected_transcription(&translate, "translate", ResponseFormat::VerboseJson),
    });
    run_python_with(
        "audio",
        &[("LMGEN_BASE_URL", server.url.clone())],
        &expected,
    );
    server.assert_no_panic();
}

/// The golden tiny Llama with a Qwen2.5 (Hermes) tool-calling chat template whose generation
/// prompt opens `<think>` unless `enable_thinking` is false (as Qwen3's thinking models do), and
/// a 4096-token context for the tools' system prompt. Its vocabulary spells the markers
/// (`<tool_call>`, `<think>`) in pieces and bytes.
fn tool_checkpoint() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        include_str!("hermes_tools.jinja"),
    )
    .unwrap();
    let config_path = dir.path().join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["max_position_embeddings"] = json!(4096);
    std::fs::write(&config_path, config.to_string()).unwrap();
    dir
}

#[test]
fn openai_client_tool_calls_and_reasoning() {
    if python().is_none() {
        return;
    }
    let checkpoint = tool_checkpoint();
    let server = Server::start_on(checkpoint.path(), &["--kv-cache-tokens", "16384"]);
    run_python_with(
        "tools",
        &[("LMGEN_BASE_URL", server.url.clone())],
        &json!({}),
    );
    server.assert_no_panic();
}
