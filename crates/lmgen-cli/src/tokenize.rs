//! `lmgen tokenize --request FILE`: the tokenizer and the chat template (DESIGN.md section 4).
//!
//! Each line is `{"model", "text"}` -> `{"ids", "decoded", "decoded_skip_special"}` (ids with the
//! special tokens the tokenizer adds by default; decoded with and without special tokens), or
//! `{"model", "messages", "add_generation_prompt"?, "tools"?, "documents"?, "chat_template_kwargs"?}`
//! -> `{"rendered"}` (`apply_chat_template(tokenize=False)`). A failing line answers
//! `{"error": {"message"}}`, a template's `raise_exception` included. Only the tokenizer files are
//! read, never the weights.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use lmgen::load::{fetch_model, FileSet, HubOptions};
use lmgen::Tokenizer;
use lmgen_server::model_args::DEFAULT_MODEL;
use serde_json::{json, Map, Value};

use crate::jsonl::{self, take};

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Read JSON-lines requests from FILE (`-` for stdin) and write one JSON response per line.
    #[arg(long, value_name = "FILE")]
    pub request: PathBuf,
    /// Checkpoint directory or model id for requests without `model` (default: the shipped one).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
}

/// The top-level keys of a request.
const REQUEST_FIELDS: &[&str] = &[
    "model",
    "text",
    "messages",
    "add_generation_prompt",
    "tools",
    "documents",
    "chat_template_kwargs",
];

pub fn run(args: TokenizeArgs) -> Result<()> {
    let mut tokenizers: HashMap<String, Tokenizer> = HashMap::new();
    let default_model = args.model.unwrap_or_else(|| DEFAULT_MODEL.to_string());
    jsonl::serve_lines(&args.request, |line| {
        answer(line, &mut tokenizers, &default_model)
    })
}

fn answer(
    line: &str,
    tokenizers: &mut HashMap<String, Tokenizer>,
    default_model: &str,
) -> Result<Value> {
    let mut fields = jsonl::request_fields(line, REQUEST_FIELDS).context("invalid request")?;
    let model: String = take(&mut fields, "model")?.unwrap_or_else(|| default_model.to_string());
    if !tokenizers.contains_key(&model) {
        let dir = fetch_model(&model, FileSet::Tokenizer, &downloads())?;
        let tok = Tokenizer::from_dir(&dir).with_context(|| format!("loading `{model}`"))?;
        tokenizers.insert(model.clone(), tok);
    }
    let tok = tokenizers
        .get(&model)
        .ok_or_else(|| anyhow!("tokenizer of `{model}` not loaded"))?;
    let text: Option<String> = take(&mut fields, "text")?;
    let messages: Option<Vec<Value>> = take(&mut fields, "messages")?;
    match (text, messages) {
        (Some(text), None) => {
            if let Some(key) = fields.keys().next() {
                bail!("invalid request: `{key}` goes with `messages`, not `text`");
            }
            let ids = tok.encode(&text)?;
            Ok(json!({
                "ids": ids,
                "decoded": tok.decode(&ids, false)?,
                "decoded_skip_special": tok.decode(&ids, true)?,
            }))
        }
        (None, Some(messages)) => {
            let add_generation_prompt: bool =
                take(&mut fields, "add_generation_prompt")?.unwrap_or(false);
            let mut extra: Map<String, Value> =
                take(&mut fields, "chat_template_kwargs")?.unwrap_or_default();
            for key in ["tools", "documents"] {
                if let Some(v) = take::<Value>(&mut fields, key)? {
                    extra.insert(key.into(), v);
                }
            }
            let rendered = tok.apply_chat_template(&messages, add_generation_prompt, &extra)?;
            Ok(json!({ "rendered": rendered }))
        }
        (Some(_), Some(_)) => bail!("invalid request: give either `text` or `messages`, not both"),
        (None, None) => bail!("invalid request: a request needs `text` or `messages`"),
    }
}

/// How a model id missing from the cache is downloaded: its tokenizer files only, with progress
/// bars on a terminal.
fn downloads() -> HubOptions {
    HubOptions {
        progress: true,
        ..HubOptions::default()
    }
}
