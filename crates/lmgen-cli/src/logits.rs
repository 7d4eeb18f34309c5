//! `lmgen logits --request FILE`: run logits processors on given scores (DESIGN.md section 4).
//!
//! Each line is `{"input_ids", "scores", "processor": {"name", "args"}}` (one processor from its
//! transformers class name and constructor arguments) or `{"input_ids", "scores", "generation_config",
//! "prompt_length", "model"}` (the whole list `generate()` builds for that config on top of the
//! checkpoint's generation config). Answers `{"output": [[float|null]]}`; `-inf` is `null`, and the
//! strings `"nan"`, `"inf"`, `"-inf"` stand for themselves in and out.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use lmgen::generation::config::UnknownFields;
use lmgen::generation::logits::{processor_from_hf, LogitsProcessorList, ProcessorContext};
use lmgen::generation::Scores;
use lmgen::models::LoadOptions;
use lmgen::{GenerationConfig, TokenId};
use lmgen_server::model_args::DEFAULT_MODEL;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::models::Models;

#[derive(Args, Debug)]
pub struct LogitsArgs {
    /// Read JSON-lines requests from FILE (`-` for stdin) and write one JSON response per line.
    #[arg(long, value_name = "FILE")]
    pub request: PathBuf,
}

/// One request line; `null` means absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogitsRequest {
    input_ids: Vec<Vec<TokenId>>,
    /// `[[float|null|"nan"|"inf"|"-inf"]]`: `null` is `-inf`.
    scores: Vec<Vec<Option<Score>>>,
    processor: Option<ProcessorSpec>,
    generation_config: Option<Value>,
    prompt_length: Option<usize>,
    model: Option<String>,
}

/// `{"name": transformers class name, "args": constructor arguments}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessorSpec {
    name: String,
    #[serde(default)]
    args: Value,
}

/// A score: a number, or `"nan"`, `"inf"`, `"-inf"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Score {
    Number(f64),
    Word(String),
}

pub fn run(args: LogitsArgs) -> Result<()> {
    // Requests name their model (a directory or a Hub id); there is no default one.
    let mut models = Models::any(DEFAULT_MODEL.to_string(), LoadOptions::default());
    crate::jsonl::serve_lines(&args.request, |line| answer(line, &mut models))
}

/// The answer to one `lmgen logits --request` line: `{"output": [[float|null]]}`, or the error
/// that becomes `{"error": {"message": ...}}` ([`crate::jsonl::response`]). `models` serves the
/// request's `model` (its generation config, and the model itself for `guidance_scale`).
pub fn answer(line: &str, models: &mut Models) -> Result<Value> {
    let req: LogitsRequest = crate::jsonl::parse_request(line).context("invalid request")?;
    let input_ids = &req.input_ids;
    let mut scores = parse_scores(&req.scores)?;
    if scores.batch != input_ids.len() {
        bail!(
            "`scores` has {} rows but `input_ids` has {}",
            scores.batch,
            input_ids.len()
        );
    }
    if input_ids.iter().any(|r| r.len() != input_ids[0].len()) {
        bail!("`input_ids` rows must have one length");
    }
    match &req.processor {
        Some(p) => {
            let chain_fields = [
                ("generation_config", req.generation_config.is_some()),
                ("prompt_length", req.prompt_length.is_some()),
                ("model", req.model.is_some()),
            ];
            if let Some((k, _)) = chain_fields.iter().find(|(_, set)| *set) {
                bail!("give either `processor` or `generation_config`, not both (`{k}` is set)");
            }
            let proc = processor_from_hf(&p.name, &p.args)?;
            proc.process(input_ids, &mut scores)?;
        }
        None => chain(&req, models, input_ids, &mut scores)?,
    }
    Ok(
        json!({"output": scores.to_rows().iter().map(|r| r.iter().map(|&x| float_out(x)).collect::<Vec<_>>()).collect::<Vec<_>>()}),
    )
}

/// The list `generate()` builds for the request's config, applied to `scores`.
fn chain(
    req: &LogitsRequest,
    models: &mut Models,
    input_ids: &[Vec<TokenId>],
    scores: &mut Scores,
) -> Result<()> {
    let overrides = match &req.generation_config {
        Some(v) => {
            GenerationConfig::from_json(v, UnknownFields::Reject).context("`generation_config`")?
        }
        None => bail!("a request needs `processor` or `generation_config`"),
    };
    let Some(prompt_length) = req.prompt_length else {
        bail!("a `generation_config` request needs `prompt_length`");
    };
    let dir = match &req.model {
        Some(m) => Some(models.checkpoint_dir(m)?),
        None => None,
    };
    let (mut config, max_positions, vocab_size) = match &dir {
        Some(d) => (
            GenerationConfig::from_pretrained(d)?,
            model_config_usize(d, &["max_position_embeddings", "n_positions"]),
            model_config_usize(d, &["vocab_size"]),
        ),
        None => (GenerationConfig::default(), None, None),
    };
    config.update(&overrides);
    config.validate()?;
    let lengths = config.resolve_lengths(prompt_length, max_positions)?;
    let needs_model = config.guidance_scale.is_some_and(|g| g != 1.0);
    let pipe = match (&req.model, needs_model) {
        (Some(m), true) => Some(models.get(Some(m))?),
        (None, true) => {
            bail!("`guidance_scale` needs `model` (it runs the model on the negative prompt)")
        }
        _ => None,
    };
    let prompt: Vec<Vec<TokenId>> = input_ids
        .iter()
        .map(|r| r[..prompt_length.min(r.len())].to_vec())
        .collect();
    let ctx = ProcessorContext {
        prompt_ids: Some(&prompt),
        model: pipe.map(|p| p.model.as_ref()),
        vocab_size,
        ..ProcessorContext::new(prompt_length, lengths.min_length, lengths.max_length)
    };
    let list = LogitsProcessorList::from_config(&config, ctx)?;
    list.process(input_ids, scores)?;
    Ok(())
}

/// The first of `keys` set in the checkpoint's `config.json` (or its `text_config`), e.g.
/// `max_position_embeddings` or GPT-2's `n_positions`.
fn model_config_usize(dir: &Path, keys: &[&str]) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let get = |o: &Value| keys.iter().find_map(|k| o.get(*k).and_then(Value::as_u64));
    get(&v)
        .or_else(|| v.get("text_config").and_then(get))
        .and_then(|x| usize::try_from(x).ok())
}

/// `[[float|null|"nan"|"inf"|"-inf"]]` -> scores.
fn parse_scores(rows: &[Vec<Option<Score>>]) -> Result<Scores> {
    let vocab = rows.first().map_or(0, Vec::len);
    let mut data = Vec::with_capacity(rows.len() * vocab);
    for (i, row) in rows.iter().enumerate() {
        if row.len() != vocab {
            bail!(
                "`scores` rows must have one length: row 0 has {vocab}, row {i} has {}",
                row.len()
            );
        }
        for x in row {
            data.push(match x {
                None => f32::NEG_INFINITY,
                Some(Score::Number(f)) => *f as f32,
                Some(Score::Word(w)) => match w.as_str() {
                    "nan" => f32::NAN,
                    "inf" => f32::INFINITY,
                    "-inf" => f32::NEG_INFINITY,
                    other => {
                        bail!("`scores` row {i}: {other:?} is not a number, null, \"nan\" or \"inf\"")
                    }
                },
            });
        }
    }
    Ok(Scores::new(data, rows.len(), vocab))
}

fn float_out(x: f32) -> Value {
    if x.is_nan() {
        json!("nan")
    } else if x == f32::INFINITY {
        json!("inf")
    } else if x == f32::NEG_INFINITY {
        Value::Null
    } else {
        json!(x)
    }
}
