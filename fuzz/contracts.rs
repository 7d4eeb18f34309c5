//! What every parser of untrusted bytes promises, one function per fuzz target: it returns (an
//! `Err` with a message is fine) and never panics, never aborts on an allocation sized by an
//! untrusted number, and never hangs. The fuzz targets (`fuzz/fuzz_targets/`) call these with
//! libFuzzer's inputs; `crates/lmgen-server/tests/fuzz_corpora.rs` calls them with every file of
//! `fuzz/corpus/` and `fuzz/regressions/`, so `cargo test` replays the seeds and every crash found.
//!
//! Files are written into one temporary directory per process (the loaders read directories, as
//! transformers' `from_pretrained` does), next to the golden tiny Llama's other files.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use candle_core::{DType, Device};
use clap::Parser;
use lmgen::chat_template::ChatTemplate;
use lmgen::generation::config::UnknownFields;
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, LoadOptions};
use lmgen::{GenerateInput, GenerationConfig, Pipeline, Tokenizer};
use serde_json::{Map, Value};
use tower::ServiceExt;

/// A target's check of one input.
pub type Contract = fn(&[u8]);

/// The targets, by the name of their folders under `fuzz/corpus` and `fuzz/regressions`.
pub const TARGETS: &[(&str, Contract)] = &[
    ("safetensors", safetensors),
    ("gguf", gguf),
    ("config_json", config_json),
    ("generation_config", generation_config),
    ("chat_template", chat_template),
    ("tokenizer_json", tokenizer_json),
    ("server_request", server_request),
];

/// The golden tiny Llama (vocabulary 800, context 512) the file targets complete
/// (`LMGEN_FUZZ_LLAMA` when the binaries run away from this checkout).
pub fn llama() -> PathBuf {
    if let Some(dir) = std::env::var_os("LMGEN_FUZZ_LLAMA") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lmgen/tests/fixtures/golden/models/llama")
        .canonicalize()
        .or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../crates/lmgen/tests/fixtures/golden/models/llama")
                .canonicalize()
        })
        .expect("the golden llama checkpoint")
}

/// A scratch directory of this process holding `files` (name, bytes) and nothing else.
fn scratch(files: &[(&str, &[u8])]) -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap()).path();
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    dir
}

fn golden(name: &str) -> Vec<u8> {
    std::fs::read(llama().join(name)).unwrap()
}

/// An error must say something.
#[track_caller]
fn explained(e: &dyn std::fmt::Display) {
    assert!(
        !e.to_string().trim().is_empty(),
        "an error without a message"
    );
}

/// Every tensor read in its stored shape, then the whole model built from the checkpoint.
fn read_all(checkpoint: &Checkpoint) {
    let names: Vec<String> = checkpoint.weights.names().map(str::to_string).collect();
    for name in names {
        if checkpoint.weights.disk_dtype(&name).is_some() {
            if let Err(e) = checkpoint
                .weights
                .get_unchecked_shape(&name, DType::F32, &Device::Cpu)
            {
                explained(&e);
            }
        }
    }
    if let Err(e) = load_model(checkpoint, &LoadOptions::default()) {
        explained(&e);
    }
}

/// `model.safetensors` (header, offsets, dtypes) beside the golden Llama's config.json.
pub fn safetensors(data: &[u8]) {
    let dir = scratch(&[
        ("config.json", &golden("config.json")),
        ("model.safetensors", data),
    ]);
    match Checkpoint::open(dir) {
        Ok(checkpoint) => read_all(&checkpoint),
        Err(e) => explained(&e),
    }
}

/// A GGUF file: header, metadata, tensor infos, then the config drawn from its metadata and
/// every tensor.
pub fn gguf(data: &[u8]) {
    let dir = scratch(&[("model.gguf", data)]);
    match Checkpoint::open_gguf(dir, &dir.join("model.gguf")) {
        Ok(checkpoint) => read_all(&checkpoint),
        Err(e) => explained(&e),
    }
}

/// `config.json` through the architecture registry's parsers, then the model built from it and
/// the golden Llama's weights.
pub fn config_json(data: &[u8]) {
    let dir = scratch(&[
        ("config.json", data),
        ("model.safetensors", &golden("model.safetensors")),
    ]);
    match Checkpoint::open(dir) {
        Ok(checkpoint) => {
            if let Err(e) = load_model(&checkpoint, &LoadOptions::default()) {
                explained(&e);
            }
        }
        Err(e) => explained(&e),
    }
}

/// Fields whose size bounds the work of one generate() call: above these the target only
/// parses and validates (the fuzzer would otherwise spend its time generating).
const WORK_LIMITS: &[(&str, u64)] = &[
    ("max_new_tokens", 6),
    ("max_length", 12),
    ("min_new_tokens", 6),
    ("min_length", 12),
    ("num_beams", 4),
    ("num_beam_groups", 4),
    ("num_return_sequences", 4),
    ("num_assistant_tokens", 6),
    ("prompt_lookup_num_tokens", 6),
    ("max_matching_ngram_size", 6),
    ("top_k", 1000),
];

fn pipeline() -> &'static Pipeline {
    static PIPE: OnceLock<Pipeline> = OnceLock::new();
    PIPE.get_or_init(|| Pipeline::from_pretrained(llama().to_str().unwrap()).unwrap())
}

/// `generation_config.json` into `GenerationConfig`, then (when the work is small) generate()
/// with it on the golden Llama, which runs every check of `resolve`.
pub fn generation_config(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let config = match GenerationConfig::from_json(&value, UnknownFields::Reject) {
        Ok(config) => config,
        Err(e) => return explained(&e),
    };
    let small = value.as_object().is_some_and(|fields| {
        WORK_LIMITS.iter().all(|(key, limit)| {
            fields
                .get(*key)
                .is_none_or(|v| v.as_u64().is_some_and(|n| n <= *limit))
        })
    });
    let max_length = value.get("max_length").is_some() || value.get("max_new_tokens").is_some();
    if !small || !max_length {
        return;
    }
    let input = GenerateInput {
        input_ids: vec![vec![1, 15, 27]],
        attention_mask: None,
    };
    if let Err(e) = pipeline().generate(&input, &config) {
        explained(&e);
    }
}

/// A chat template and a conversation, split at the first NUL byte: the template compiles or
/// not, and renders within its fuel and output limits or answers an error.
pub fn chat_template(data: &[u8]) {
    let (source, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"[]"[..]),
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let template = match ChatTemplate::new(source) {
        Ok(t) => t,
        Err(e) => return explained(&e),
    };
    template.pin_clock(Some(1_785_931_200));
    let (messages, vars) = match serde_json::from_slice::<Value>(rest) {
        Ok(Value::Array(messages)) => (messages, Map::new()),
        Ok(Value::Object(mut vars)) => match vars.remove("messages") {
            Some(Value::Array(messages)) => (messages, vars),
            _ => (Vec::new(), vars),
        },
        _ => (Vec::new(), Map::new()),
    };
    if let Err(e) = template.render(&messages, true, vars) {
        explained(&e);
    }
}

/// `tokenizer.json` beside the golden Llama's `tokenizer_config.json`, then a round trip.
pub fn tokenizer_json(data: &[u8]) {
    let dir = scratch(&[
        ("tokenizer.json", data),
        ("tokenizer_config.json", &golden("tokenizer_config.json")),
    ]);
    let tokenizer = match Tokenizer::from_dir(dir) {
        Ok(t) => t,
        Err(e) => return explained(&e),
    };
    match tokenizer.encode("Hello world, héllo 🌍 <s>\n\t  x") {
        Ok(ids) => {
            if let Err(e) = tokenizer.decode(&ids, false) {
                explained(&e);
            }
        }
        Err(e) => explained(&e),
    }
}

#[derive(Debug, Parser)]
struct ServeCli {
    #[command(flatten)]
    serve: lmgen_server::ServeArgs,
}

/// The server over the golden Llama (context 512, a KV pool of 256 tokens), in process.
fn server() -> &'static (tokio::runtime::Runtime, Router) {
    static SERVER: OnceLock<(tokio::runtime::Runtime, Router)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let model = llama();
        let argv = [
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--served-model-name",
            "m",
            "--kv-cache-tokens",
            "256",
        ];
        let args = ServeCli::try_parse_from(argv).unwrap().serve;
        let state = lmgen_server::start(&args).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        (runtime, lmgen_server::router(state, 1 << 20))
    })
}

/// A request body to one of the four generation endpoints (chosen by the first byte): never a
/// 5xx other than 503 (a full queue), and every error is OpenAI's or Anthropic's JSON envelope
/// with a message.
pub fn server_request(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let path = [
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/responses",
    ][usize::from(which % 4)];
    let (runtime, router) = server();
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    runtime.block_on(async {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(
            !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        if status.is_client_error() {
            let answer: Value = serde_json::from_slice(&bytes).unwrap();
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(
                !message.is_empty(),
                "{path}: {status} without a message: {answer}"
            );
        }
    });
}
