//! `TextStreamer(skip_prompt=True, skip_special_tokens=True)` against transformers' chunks
//! (`streaming.json`): the prompt is put first, then each generated token, as `generate()` does.
//! Empty chunks are left out of the comparison, as `tools/conformance.py` does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use lmgen::generation::streamer::{TextStreamer, TextStreamerOptions, TokenStreamer};
use lmgen::{TokenId, Tokenizer};
use serde_json::Value;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn ids(v: &Value) -> Result<Vec<TokenId>> {
    v.as_array()
        .ok_or_else(|| anyhow!("expected an array of ids, got {v}"))?
        .iter()
        .map(|x| {
            x.as_u64()
                .map(|x| x as TokenId)
                .ok_or_else(|| anyhow!("bad id {x}"))
        })
        .collect()
}

#[test]
fn streaming_chunks_match_transformers() -> Result<()> {
    let path = golden().join("streaming.json");
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    assert!(!cases.is_empty());
    for case in &cases {
        let model = case["model"].as_str().context("model")?;
        let tok = Arc::new(Tokenizer::from_dir(&golden().join("models").join(model))?);
        let prompt = ids(&case["input_ids"][0])?;
        let sequence = ids(&case["sequence"])?;
        let want: Vec<String> = serde_json::from_value(case["chunks"].clone())?;

        let mut got = Vec::new();
        let options = TextStreamerOptions {
            skip_prompt: true,
            skip_special_tokens: true,
        };
        let mut streamer = TextStreamer::new(tok, options, |t: &str, _| got.push(t.to_string()));
        streamer.put(&prompt)?;
        for id in &sequence[prompt.len()..] {
            streamer.put(std::slice::from_ref(id))?;
        }
        streamer.end()?;
        drop(streamer);

        let non_empty =
            |v: &[String]| -> Vec<String> { v.iter().filter(|x| !x.is_empty()).cloned().collect() };
        assert_eq!(non_empty(&got), non_empty(&want), "model {model}");
        // The stronger property holds too: the same chunks at the same steps.
        assert_eq!(got, want, "model {model} (empty chunks included)");
    }
    Ok(())
}

/// `transformers_extra/streaming.json` (made by `transformers_extra/make.py` with transformers
/// 5.17): `TextStreamer(skip_prompt=True)` on tokenized texts (CJK, accents, emoji, newlines) and
/// random ids, with and without `skip_special_tokens`, one token per `put`. Same chunks, empty
/// ones included.
#[test]
fn streaming_agrees_with_transformers_on_texts_and_random_ids() -> Result<()> {
    let path = golden().join("../transformers_extra/streaming.json");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let cases = file["cases"].as_array().context("cases")?;
    let mut tokenizers = std::collections::HashMap::new();
    let mut wrong = Vec::new();
    for case in cases {
        let model = case["model"].as_str().context("model")?;
        if !tokenizers.contains_key(model) {
            let tok = Arc::new(Tokenizer::from_dir(&golden().join("models").join(model))?);
            tokenizers.insert(model.to_string(), tok);
        }
        let tok = tokenizers[model].clone();
        let prompt = ids(&case["prompt"])?;
        let seq = ids(&case["ids"])?;
        let skip_special_tokens = case["skip_special_tokens"].as_bool().context("skip")?;
        let want: Vec<String> = serde_json::from_value(case["chunks"].clone())?;
        let mut got = Vec::new();
        let options = TextStreamerOptions {
            skip_prompt: true,
            skip_special_tokens,
        };
        let mut streamer = TextStreamer::new(tok, options, |t: &str, _| got.push(t.to_string()));
        streamer.put(&prompt)?;
        for id in &seq {
            streamer.put(std::slice::from_ref(id))?;
        }
        streamer.end()?;
        drop(streamer);
        if got != want {
            wrong.push(format!(
                "{model} {seq:?} skip_special_tokens={skip_special_tokens}:\n  transformers {want:?}\n  lmgen        {got:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    Ok(())
}
