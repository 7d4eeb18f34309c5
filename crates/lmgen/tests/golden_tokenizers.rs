//! The tokenizer and chat templates against transformers (`tokenizers.json`): every `encode` case
//! (ids with the default special tokens, decode with and without special tokens) and every `chat`
//! case (`apply_chat_template(tokenize=False)`, or the error a template raises by design).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lmgen::Tokenizer;
use serde_json::Value;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn cases() -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(golden().join("tokenizers.json"))?;
    Ok(serde_json::from_str(&text)?)
}

/// Tokenizers by golden model name, loaded once.
#[derive(Default)]
struct Tokenizers(HashMap<String, Tokenizer>);

impl Tokenizers {
    fn get(&mut self, case: &Value) -> anyhow::Result<&Tokenizer> {
        let model = case["model"].as_str().unwrap_or_default().to_string();
        if !self.0.contains_key(&model) {
            let tok = Tokenizer::from_dir(&golden().join("models").join(&model))?;
            self.0.insert(model.clone(), tok);
        }
        Ok(&self.0[&model])
    }
}

#[test]
fn encode_cases_match_transformers() -> anyhow::Result<()> {
    let mut toks = Tokenizers::default();
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases()?.iter().filter(|c| c["kind"] == "encode") {
        let tok = toks.get(case)?;
        let text = case["text"].as_str().unwrap_or_default();
        let want_ids: Vec<u32> = serde_json::from_value(case["ids"].clone())?;
        let ids = tok.encode(text)?;
        let decoded = tok.decode(&ids, false)?;
        let skipped = tok.decode(&ids, true)?;
        let got = (ids, decoded.as_str(), skipped.as_str());
        let want = (
            want_ids,
            case["decoded"].as_str().unwrap_or_default(),
            case["decoded_skip_special"].as_str().unwrap_or_default(),
        );
        if got != want {
            failures.push(format!(
                "{}/{text:?}: got {got:?}, want {want:?}",
                case["model"]
            ));
        }
        checked += 1;
    }
    assert!(checked >= 56, "only {checked} encode cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn chat_cases_match_transformers() -> anyhow::Result<()> {
    let mut toks = Tokenizers::default();
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases()?.iter().filter(|c| c["kind"] == "chat") {
        let tok = toks.get(case)?;
        let messages: Vec<Value> = serde_json::from_value(case["messages"].clone())?;
        let add = case["add_generation_prompt"].as_bool().unwrap_or(false);
        let got = tok.apply_chat_template(&messages, add, &serde_json::Map::new());
        let ok = match (&got, case.get("error"), case["rendered"].as_str()) {
            // The template raised: the message is transformers' own.
            (Err(lmgen::Error::ChatTemplate(msg)), Some(want), _) => {
                Some(msg.as_str()) == want.as_str()
            }
            (Ok(text), None, Some(want)) => text == want,
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{}/{messages:?} add_generation_prompt={add}: got {got:?}",
                case["model"]
            ));
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} chat cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
