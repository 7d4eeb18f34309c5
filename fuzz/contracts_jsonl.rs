//! The contracts of the CLI's JSON-lines requests (`lmgen generate --request`, `lmgen logits
//! --request`; DESIGN.md section 4), one line per input, answered by the library the binary uses
//! (`lmgen_cli`) over the golden tiny Llama: a response object, or an error with a message that
//! becomes `{"error": {"message"}}`; never a panic, an allocation sized by an untrusted number or
//! a hang. The fuzz targets call these with libFuzzer's inputs;
//! `crates/lmgen-cli/tests/fuzz_corpora.rs` calls them with every file of `fuzz/corpus/` and
//! `fuzz/regressions/` of these targets. Requests may name only the model `llama` (or none);
//! nothing is downloaded.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use lmgen::GenerationConfig;
use lmgen_cli::{jsonl, logits, Models};
use serde_json::Value;

/// A target's check of one input.
pub type JsonlContract = fn(&[u8]);

/// The targets, by the name of their folders under `fuzz/corpus` and `fuzz/regressions`.
pub const JSONL_TARGETS: &[(&str, JsonlContract)] = &[
    ("jsonl_request", jsonl_request),
    ("logits_request", logits_request),
];

/// The name requests give the golden Llama.
const MODEL: &str = "llama";

/// The golden tiny Llama (vocabulary 800, context 512; `LMGEN_FUZZ_LLAMA` when the binaries run
/// away from this checkout).
fn golden_llama() -> PathBuf {
    if let Some(dir) = std::env::var_os("LMGEN_FUZZ_LLAMA") {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    ["../lmgen", "../crates/lmgen"]
        .iter()
        .find_map(|crate_dir| {
            manifest
                .join(crate_dir)
                .join("tests/fixtures/golden/models/llama")
                .canonicalize()
                .ok()
        })
        .expect("the golden llama checkpoint")
}

/// The models of this process (loaded once; a panic in one input does not poison the next).
fn models() -> std::sync::MutexGuard<'static, Models> {
    static MODELS: OnceLock<Mutex<Models>> = OnceLock::new();
    MODELS
        .get_or_init(|| Mutex::new(Models::only(MODEL, golden_llama())))
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// One request line: the input up to its first newline, as the CLI reads lines; `None` for
/// input that is not UTF-8 or a blank line (which the CLI skips).
fn line(data: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(data).ok()?;
    let line = text.lines().next()?;
    (!line.trim().is_empty()).then_some(line)
}

/// An answer keeps the contract: a JSON object, or an error whose response carries a message.
#[track_caller]
fn answered(answer: anyhow::Result<Value>) {
    let failed = answer.is_err();
    let response = jsonl::response(answer);
    let text = serde_json::to_string(&response).unwrap();
    assert!(
        response.is_object(),
        "a response that is not an object: {text}"
    );
    if failed {
        let message = response["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.trim().is_empty(),
            "an error without a message: {text}"
        );
    }
}

/// Fields of a request's `generation_config` whose size bounds the work of its generate() call
/// (the `generation_config` target's bounds): above these the target only parses the request.
const WORK_LIMITS: &[(&str, f64)] = &[
    ("max_new_tokens", 6.0),
    ("max_length", 12.0),
    ("min_new_tokens", 6.0),
    ("min_length", 12.0),
    ("num_beams", 4.0),
    ("num_beam_groups", 4.0),
    ("num_return_sequences", 4.0),
    ("num_assistant_tokens", 6.0),
    ("prompt_lookup_num_tokens", 6.0),
    ("max_matching_ngram_size", 6.0),
    ("top_k", 1000.0),
];

/// Whether a request's generate() call is small enough to run (its numbers within
/// [`WORK_LIMITS`]; those that are not numbers fail validation before any work).
fn small(line: &str) -> bool {
    let Ok(Value::Object(request)) = serde_json::from_str::<Value>(line) else {
        return true;
    };
    let Some(Value::Object(config)) = request.get("generation_config") else {
        return true;
    };
    WORK_LIMITS.iter().all(|(key, limit)| {
        config
            .get(*key)
            .and_then(Value::as_f64)
            .is_none_or(|n| n <= *limit)
    })
}

/// One `lmgen generate --request` line over the golden Llama, under a command line of
/// `--max-new-tokens 6` (a request's own `generation_config` goes over it).
pub fn jsonl_request(data: &[u8]) {
    let Some(line) = line(data) else {
        return;
    };
    if !small(line) {
        if let Err(e) = jsonl::GenerateRequest::parse(line) {
            answered(Err(e));
        }
        return;
    }
    let base = GenerationConfig {
        max_new_tokens: Some(6),
        ..GenerationConfig::default()
    };
    answered(jsonl::answer(line, &mut models(), &base));
}

/// One `lmgen logits --request` line: a processor by its transformers name, or the list a
/// generation config builds (with `"model": "llama"`, the golden Llama's).
pub fn logits_request(data: &[u8]) {
    let Some(line) = line(data) else {
        return;
    };
    answered(logits::answer(line, &mut models()));
}
