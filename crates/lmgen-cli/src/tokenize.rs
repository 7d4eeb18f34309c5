//! `lmgen tokenize --request FILE`: the tokenizer and the chat template (DESIGN.md section 4).
//!
//! Each line is `{"model", "text"}` -> `{"ids", "decoded", "decoded_skip_special"}` (ids with the
//! special tokens the tokenizer adds by default; decoded with and without special tokens), or
//! `{"model", "messages", "add_generation_prompt"?, "tools"?, "documents"?, "chat_template_kwargs"?,
//! "now"?}` -> `{"rendered"}` (`apply_chat_template(tokenize=False)`; `"now":
//! "2026-03-07T09:05:03"` is the time, UTC, that the template's `strftime_now` prints, for
//! reproducible renders; without it the real clock). A failing line answers `{"error":
//! {"message"}}`, a template's `raise_exception` included. Only the tokenizer files are read,
//! never the weights: a folder with `tokenizer.json` (and `tokenizer_config.json` or
//! `chat_template.jinja`) and no `config.json` is enough.

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
    now: Option<String>,
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
                ("now", req.now.is_some()),
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
            let pinned = match &req.now {
                Some(now) => Some(unix_seconds(now).context("`now`")?),
                None => None,
            };
            // The tokenizer is kept for the next lines: pin for this render only.
            if let Some(template) = tok.chat_template() {
                template.pin_clock(pinned);
            }
            let rendered = tok.apply_chat_template(&messages, add_generation_prompt, &extra);
            if let Some(template) = tok.chat_template() {
                template.pin_clock(None);
            }
            Ok(json!({ "rendered": rendered? }))
        }
        (Some(_), Some(_)) => bail!("invalid request: give either `text` or `messages`, not both"),
        (None, None) => bail!("invalid request: a request needs `text` or `messages`"),
    }
}

/// `"YYYY-MM-DDTHH:MM:SS"` (UTC; a trailing `Z` allowed) as seconds since 1970.
fn unix_seconds(text: &str) -> Result<i64> {
    let bad = || anyhow!("expected a time such as \"2026-03-07T09:05:03\", got {text:?}");
    let t = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = t.split_once(['T', ' ']).ok_or_else(bad)?;
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let h: Vec<&str> = time.split(':').collect();
    let [y, m, day] = d[..] else {
        return Err(bad());
    };
    let [hh, mm, ss] = h[..] else {
        return Err(bad());
    };
    let (y, m, day, hh, mm, ss) = (num(y)?, num(m)?, num(day)?, num(hh)?, num(mm)?, num(ss)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    // Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard Hinnant's
    // days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hh * 3_600 + mm * 60 + ss)
}

/// How a model id missing from the cache is downloaded: its tokenizer files only, with progress
/// bars on a terminal.
fn downloads() -> HubOptions {
    HubOptions {
        progress: true,
        ..HubOptions::default()
    }
}
