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
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::jsonl;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Read JSON-lines requests from FILE (`-` for stdin) and write one JSON response per line.
    #[arg(long, value_name = "FILE")]
    pub request: PathBuf,
    /// Checkpoint directory or model id for requests without `model` (default: the shipped one).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
}

/// One request line; `null` means absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeRequest {
    model: Option<String>,
    text: Option<String>,
    messages: Option<Vec<Value>>,
    add_generation_prompt: Option<bool>,
    tools: Option<Value>,
    documents: Option<Value>,
    chat_template_kwargs: Option<Map<String, Value>>,
}

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
    let req: TokenizeRequest = jsonl::parse_request(line).context("invalid request")?;
    let model = req.model.unwrap_or_else(|| default_model.to_string());
    if !tokenizers.contains_key(&model) {
        let dir = fetch_model(&model, FileSet::Tokenizer, &downloads())?;
        let tok = Tokenizer::from_dir(&dir).with_context(|| format!("loading `{model}`"))?;
        tokenizers.insert(model.clone(), tok);
    }
    let tok = tokenizers
        .get(&model)
        .ok_or_else(|| anyhow!("tokenizer of `{model}` not loaded"))?;
    match (req.text, req.messages) {
        (Some(text), None) => {
            let chat_fields = [
                ("add_generation_prompt", req.add_generation_prompt.is_some()),
                ("tools", req.tools.is_some()),
                ("documents", req.documents.is_some()),
                ("chat_template_kwargs", req.chat_template_kwargs.is_some()),
            ];
            if let Some((key, _)) = chat_fields.iter().find(|(_, set)| *set) {
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
            let add_generation_prompt = req.add_generation_prompt.unwrap_or(false);
            let mut extra = req.chat_template_kwargs.unwrap_or_default();
            for (key, value) in [("tools", req.tools), ("documents", req.documents)] {
                if let Some(v) = value {
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
