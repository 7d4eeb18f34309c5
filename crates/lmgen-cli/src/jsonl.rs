//! The JSON-lines interface (DESIGN.md section 4): one request per line in, one response per line
//! out, in order. A failing request answers `{"error": {"message": ...}}` and the others still run.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use lmgen::generation::config::UnknownFields;
use lmgen::generation::streamer::{TextStreamer, TextStreamerOptions, TokenStreamer};
use lmgen::generation::structured::Grammar;
use lmgen::generation::{EncoderInputs, GenerateOptions, Seq2SeqInput};
use lmgen::models::LoadOptions;
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use lmgen_server::ModelArgs;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::models::Models;

/// What a request may ask to get back.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Return {
    #[serde(default)]
    scores: bool,
    #[serde(default)]
    logits: bool,
    #[serde(default)]
    stream_chunks: bool,
    /// transformers' `hidden_states`: `[steps][layers + 1][b][t_step][hidden]`.
    #[serde(default)]
    hidden_states: bool,
    /// transformers' `attentions`: `[steps][attention layers][b][heads][t_step][keys]` (empty per
    /// step unless the model was loaded with `--attn-implementation eager`).
    #[serde(default)]
    attentions: bool,
}

/// One `lmgen generate --request` line; `null` means absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    model: Option<String>,
    input_ids: Option<Vec<Vec<u32>>>,
    attention_mask: Option<Vec<Vec<u8>>>,
    prompts: Option<Vec<String>>,
    /// Encoder-decoder models: the encoder's token ids (what `input_ids` means for them too).
    encoder_input_ids: Option<Vec<Vec<u32>>>,
    encoder_attention_mask: Option<Vec<Vec<u8>>>,
    /// Encoder-decoder models reading audio (Whisper): `[b][n_mels][frames]` log-mel features.
    input_features: Option<Vec<Vec<Vec<f32>>>>,
    /// Encoder-decoder models: the decoder's prompt (HF `decoder_input_ids`).
    decoder_input_ids: Option<Vec<Vec<u32>>>,
    generation_config: Option<Value>,
    assistant_model: Option<String>,
    seed: Option<u64>,
    /// `{"json_schema": {...}}`, `"json_object"`, `{"regex": "..."}`, `{"grammar": "<lark>"}` or `{"gbnf": "<gbnf>"}`.
    structured: Option<Grammar>,
    #[serde(rename = "return", default)]
    ret: Option<Return>,
}

/// Parses one request line into `T`; an error names the field at fault by its path
/// (`input_ids[0][1]`, `return.logit`), and an unknown key lists the expected ones.
pub fn parse_request<T: DeserializeOwned>(line: &str) -> Result<T> {
    let value: Value = serde_json::from_str(line).context("not valid JSON")?;
    if !value.is_object() {
        bail!("a request must be a JSON object");
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            anyhow!("{inner}")
        } else {
            anyhow!("`{path}`: {inner}")
        }
    })
}

/// Answers each non-empty line of `path` (`-` = stdin) with one JSON line on stdout, in order; a
/// failing request answers `{"error": {"message": ...}}` and the others still run.
pub fn serve_lines(path: &Path, mut answer: impl FnMut(&str) -> Result<Value>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for line in open(path)?.lines() {
        let line = line.context("reading requests")?;
        if line.trim().is_empty() {
            continue;
        }
        serde_json::to_writer(&mut out, &response(answer(&line)))?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

/// The response line of an answer: the answer, or `{"error": {"message": ...}}` with the whole
/// chain of causes.
pub fn response(answer: Result<Value>) -> Value {
    answer.unwrap_or_else(|e| json!({"error": {"message": format!("{e:#}")}}))
}

/// Reads requests from `path` (`-` = stdin).
fn open(path: &Path) -> Result<Box<dyn BufRead>> {
    if path == Path::new("-") {
        Ok(Box::new(BufReader::new(std::io::stdin())))
    } else {
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot open `{}`", path.display()))?;
        Ok(Box::new(BufReader::new(f)))
    }
}

/// `lmgen generate --request FILE`.
pub fn serve_generate(
    path: &Path,
    args: &ModelArgs,
    options: &LoadOptions,
    base: &GenerationConfig,
) -> Result<()> {
    let mut models = Models::new(args, options);
    serve_lines(path, |line| answer(line, &mut models, base))
}

/// The answer to one `lmgen generate --request` line: the response object, or the error that
/// becomes `{"error": {"message": ...}}` ([`response`]). `base` is the generation config of the
/// command line (flags and `--generation-config`), under the request's `generation_config`.
pub fn answer(line: &str, models: &mut Models, base: &GenerationConfig) -> Result<Value> {
    let req = GenerateRequest::parse(line)?;
    answer_request(req, models, base)
}

impl GenerateRequest {
    /// One request line; an error names the field at fault ([`parse_request`]).
    pub fn parse(line: &str) -> Result<Self> {
        parse_request(line).context("invalid request")
    }
}

/// The answer to a parsed `lmgen generate --request` line (see [`answer`]).
pub fn answer_request(
    req: GenerateRequest,
    models: &mut Models,
    base: &GenerationConfig,
) -> Result<Value> {
    let ret = req.ret.unwrap_or_default();
    let mut overrides = base.clone();
    if let Some(gc) = &req.generation_config {
        overrides.update(&GenerationConfig::from_json(gc, UnknownFields::Reject)?);
    }
    if ret.scores {
        overrides.output_scores = Some(true);
        overrides.return_dict_in_generate = Some(true);
    }
    if ret.logits {
        overrides.output_logits = Some(true);
        overrides.return_dict_in_generate = Some(true);
    }
    if ret.hidden_states {
        overrides.output_hidden_states = Some(true);
        overrides.return_dict_in_generate = Some(true);
    }
    if ret.attentions {
        overrides.output_attentions = Some(true);
        overrides.return_dict_in_generate = Some(true);
    }
    let grammar = match &req.structured {
        Some(grammar) => {
            let key = models.key(req.model.as_deref());
            let compiler = models.structured_output(&key, &overrides)?;
            Some(compiler.processor(grammar).context("`structured`")?)
        }
        None => None,
    };
    let (pipe, assistant) = match &req.assistant_model {
        Some(a) => {
            let (pipe, draft) = models.get_pair(req.model.as_deref(), a)?;
            (pipe, Some(draft))
        }
        None => (models.get(req.model.as_deref())?, None),
    };
    let input = request_input(
        pipe,
        &overrides,
        RequestInputs {
            input_ids: req.input_ids,
            attention_mask: req.attention_mask,
            prompts: req.prompts,
            encoder_input_ids: req.encoder_input_ids,
            encoder_attention_mask: req.encoder_attention_mask,
            input_features: req.input_features,
            decoder_input_ids: req.decoder_input_ids,
        },
    )?;
    // What a TextIteratorStreamer(skip_prompt=True, skip_special_tokens=True) would yield.
    let mut chunks: Vec<String> = Vec::new();
    let mut streamer = TextStreamer::new(
        pipe.tokenizer.clone(),
        TextStreamerOptions {
            skip_prompt: true,
            skip_special_tokens: true,
        },
        |text: &str, _end: bool| chunks.push(text.to_string()),
    );
    let mut options = match assistant {
        Some(draft) => pipe.assisted_by(draft),
        None => GenerateOptions::default(),
    };
    options.seed = req.seed;
    options
        .logits_processors
        .extend(grammar.map(|g| Box::new(g) as Box<dyn lmgen::generation::LogitsProcessor>));
    options.streamer = ret
        .stream_chunks
        .then_some(&mut streamer as &mut dyn TokenStreamer);
    let out = match &input {
        Input::Prompt(input) => pipe.generate_with(input, &overrides, options)?,
        Input::Seq2Seq(input) => pipe.generate_seq2seq_with(input, &overrides, options)?,
    };
    drop(streamer);
    let mut resp = serde_json::Map::new();
    resp.insert("sequences".into(), json!(out.sequences));
    if let Some(scores) = &out.sequences_scores {
        resp.insert("sequences_scores".into(), json!(scores));
    }
    if ret.stream_chunks {
        resp.insert("stream_chunks".into(), json!(chunks));
    }
    if ret.scores {
        let scores = out
            .scores
            .as_ref()
            .ok_or_else(|| anyhow!("scores missing"))?;
        resp.insert("scores".into(), per_row(scores, out.sequences.len()));
        resp.insert(
            "transition_scores".into(),
            json!(out.compute_transition_scores(true)?),
        );
    }
    if ret.logits {
        let logits = out
            .logits
            .as_ref()
            .ok_or_else(|| anyhow!("logits missing"))?;
        resp.insert("logits".into(), per_row(logits, out.sequences.len()));
    }
    for (key, wanted, steps) in [
        ("hidden_states", ret.hidden_states, &out.hidden_states),
        ("attentions", ret.attentions, &out.attentions),
    ] {
        if wanted {
            let steps = steps.as_ref().ok_or_else(|| anyhow!("{key} missing"))?;
            resp.insert(key.into(), per_step_tensors(steps)?);
        }
    }
    let text = (0..out.sequences.len())
        .map(|i| pipe.tokenizer.decode(out.generated(i), true))
        .collect::<lmgen::Result<Vec<_>>>()?;
    resp.insert("text".into(), json!(text));
    if let Some(stats) = &out.assisted {
        resp.insert(
            "assisted".into(),
            json!({"rounds": stats.rounds, "drafted": stats.drafted, "accepted": stats.accepted,
                   "num_assistant_tokens": stats.num_assistant_tokens}),
        );
    }
    resp.insert(
        "finish_reasons".into(),
        json!(out
            .finish_reasons
            .iter()
            .map(|r| r.map(|r| r.as_str()))
            .collect::<Vec<_>>()),
    );
    Ok(Value::Object(resp))
}

/// The inputs a generate request may carry.
struct RequestInputs {
    input_ids: Option<Vec<Vec<u32>>>,
    attention_mask: Option<Vec<Vec<u8>>>,
    prompts: Option<Vec<String>>,
    encoder_input_ids: Option<Vec<Vec<u32>>>,
    encoder_attention_mask: Option<Vec<Vec<u8>>>,
    input_features: Option<Vec<Vec<Vec<f32>>>>,
    decoder_input_ids: Option<Vec<Vec<u32>>>,
}

/// What a request generates from.
enum Input {
    /// A prompt (a decoder-only model's, or an encoder-decoder model's encoder input).
    Prompt(GenerateInput),
    /// An encoder-decoder model's encoder input with a decoder prompt, or audio features.
    Seq2Seq(Seq2SeqInput),
}

/// Exactly one source of the prompt: `input_ids` (+ `attention_mask`), `prompts`,
/// `encoder_input_ids` (+ `encoder_attention_mask`) or `input_features`; `decoder_input_ids`
/// goes with any of them on an encoder-decoder model.
fn request_input(pipe: &Pipeline, overrides: &GenerationConfig, r: RequestInputs) -> Result<Input> {
    let given: Vec<&str> = [
        ("input_ids", r.input_ids.is_some()),
        ("prompts", r.prompts.is_some()),
        ("encoder_input_ids", r.encoder_input_ids.is_some()),
        ("input_features", r.input_features.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if given.len() > 1 {
        bail!(
            "give one of `input_ids`, `prompts`, `encoder_input_ids` and `input_features`, not {}",
            given.join(" and ")
        );
    }
    if r.encoder_attention_mask.is_some() && r.encoder_input_ids.is_none() {
        bail!("`encoder_attention_mask` goes with `encoder_input_ids`");
    }
    let encoder_decoder = pipe.model.encoder().is_some();
    let seq2seq_only = [
        ("encoder_input_ids", r.encoder_input_ids.is_some()),
        ("input_features", r.input_features.is_some()),
        ("decoder_input_ids", r.decoder_input_ids.is_some()),
    ];
    if let Some((name, _)) = seq2seq_only.iter().find(|(_, set)| *set) {
        if !encoder_decoder {
            bail!("`{name}` is for encoder-decoder models; this one is decoder-only: use `input_ids` or `prompts`");
        }
    }
    let prompt = match (r.input_ids, r.prompts, r.encoder_input_ids) {
        (Some(ids), None, None) => Some(GenerateInput {
            input_ids: ids,
            attention_mask: r.attention_mask,
        }),
        (None, Some(prompts), None) => Some(pipe.encode_prompts(&prompts, overrides)?),
        (None, None, Some(ids)) => Some(GenerateInput {
            input_ids: ids,
            attention_mask: r.encoder_attention_mask,
        }),
        _ => None,
    };
    let encoder = match (prompt, r.input_features) {
        (Some(prompt), None) if r.decoder_input_ids.is_none() => return Ok(Input::Prompt(prompt)),
        (Some(prompt), None) => EncoderInputs::Ids(prompt),
        (None, Some(features)) => EncoderInputs::Features(features_tensor(&features)?),
        _ => {
            bail!("a request needs `input_ids`, `prompts`, `encoder_input_ids` or `input_features`")
        }
    };
    Ok(Input::Seq2Seq(Seq2SeqInput {
        encoder,
        decoder_input_ids: r.decoder_input_ids,
        decoder_attention_mask: None,
    }))
}

/// `[b][n_mels][frames]` as a tensor; every row of one shape.
fn features_tensor(rows: &[Vec<Vec<f32>>]) -> Result<candle_core::Tensor> {
    let b = rows.len();
    let mels = rows.first().map_or(0, Vec::len);
    let frames = rows.first().and_then(|r| r.first()).map_or(0, Vec::len);
    if b == 0 || mels == 0 || frames == 0 {
        bail!("`input_features` must be a non-empty [batch][n_mels][frames] array");
    }
    for (i, row) in rows.iter().enumerate() {
        if row.len() != mels || row.iter().any(|m| m.len() != frames) {
            bail!("`input_features[{i}]` is not [{mels}][{frames}] like row 0");
        }
    }
    let flat: Vec<f32> = rows.iter().flatten().flatten().copied().collect();
    Ok(candle_core::Tensor::from_vec(
        flat,
        (b, mels, frames),
        &candle_core::Device::Cpu,
    )?)
}

/// `[steps][layers]` of tensors as nested lists, in transformers' order (a tuple per step, a
/// tensor per layer).
fn per_step_tensors(steps: &[Vec<candle_core::Tensor>]) -> Result<Value> {
    let steps = steps
        .iter()
        .map(|layers| {
            layers
                .iter()
                .map(nested)
                .collect::<Result<Vec<_>>>()
                .map(Value::Array)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Value::Array(steps))
}

/// A tensor as nested JSON lists of its shape (f32 values).
fn nested(t: &candle_core::Tensor) -> Result<Value> {
    let values: Vec<f32> = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    fn build(values: &[f32], dims: &[usize]) -> Value {
        match dims {
            [] => json!(values.first().copied().unwrap_or_default()),
            [_] => json!(values),
            [n, rest @ ..] => {
                let size = values.len() / n.max(&1);
                Value::Array(
                    values
                        .chunks(size.max(1))
                        .take(*n)
                        .map(|c| build(c, rest))
                        .collect(),
                )
            }
        }
    }
    Ok(build(&values, t.dims()))
}

/// `[steps][b, vocab]` -> `[b][steps][vocab]`, `-inf` as `null`.
fn per_row(steps: &[lmgen::generation::Scores], b: usize) -> Value {
    let rows: Vec<Vec<Vec<Value>>> = (0..b)
        .map(|i| {
            steps
                .iter()
                .map(|s| {
                    s.row(i)
                        .iter()
                        .map(|&x| {
                            if x.is_finite() {
                                json!(x)
                            } else if x.is_nan() {
                                json!("nan")
                            } else if x > 0.0 {
                                json!("inf")
                            } else {
                                Value::Null
                            }
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    json!(rows)
}
