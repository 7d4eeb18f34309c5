//! Bad input end to end: a golden checkpoint copied into a temporary directory and broken one way at
//! a time (`checkpoint.rs`: config.json, weights, tokenizer), then bad generation configs, settings and
//! prompts (`generation.rs`). Each case must be an `Error` whose message names the file or field and
//! the problem: never a panic, never silently wrong output. `load_errors.rs` covers the safetensors
//! format itself.

mod checkpoint;
mod generation;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, CausalLM, LoadOptions};
use lmgen::Pipeline;
use serde_json::{Map, Value};
use tempfile::TempDir;

fn golden(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/models")
        .join(model)
}

/// A copy of golden checkpoint `model` that a test may break.
fn copy_checkpoint(model: &str) -> Result<TempDir> {
    let tmp = tempfile::tempdir()?;
    for entry in fs::read_dir(golden(model))? {
        let entry = entry?;
        fs::copy(entry.path(), tmp.path().join(entry.file_name()))?;
    }
    Ok(tmp)
}

/// Edits the JSON object in `dir/name`.
fn edit_json(dir: &Path, name: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> Result<()> {
    let path = dir.join(name);
    let mut value: Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
    edit(value.as_object_mut().context("not a JSON object")?);
    fs::write(&path, serde_json::to_string_pretty(&value)?)?;
    Ok(())
}

fn load(dir: &Path) -> lmgen::Result<Pipeline> {
    Pipeline::from_pretrained(dir.to_str().unwrap_or_default())
}

/// The message of the error `result` must be; panics (failing the test) on `Ok`.
#[track_caller]
fn error<T>(result: lmgen::Result<T>) -> String {
    match result {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e.to_string(),
    }
}

/// Asserts that `message` contains every one of `parts`.
#[track_caller]
fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{part:?} not in: {message}");
    }
}

/// Loads `dir` the low-level way: `Checkpoint::open` + `load_model`.
fn load_low_level(dir: &Path) -> lmgen::Result<Box<dyn CausalLM>> {
    load_model(&Checkpoint::open(dir)?, &LoadOptions::default())
}
