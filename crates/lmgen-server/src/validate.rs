//! Request fields -> generation settings, checked once at the boundary. Every rejection is a 400
//! naming the field; the ranges are OpenAI's (and vLLM's for the Hugging Face extras).
//!
//! Sampling semantics: the checkpoint's `generation_config.json` gives the defaults (as vLLM's
//! `--generation-config auto`), request fields override them. `temperature: 0` is greedy, any
//! other temperature samples. transformers' implicit `top_k = 50` does not apply: `top_k` filters
//! only when the request or the checkpoint sets it.

use lmgen::generation::logits::frequency_penalty::FrequencyPenaltyLogitsProcessor;
use lmgen::generation::logits::logit_bias::LogitBiasLogitsProcessor;
use lmgen::generation::logits::presence_penalty::PresencePenaltyLogitsProcessor;
use lmgen::generation::logits::LogitsProcessor;
use lmgen::generation::structured::{Grammar, GrammarLogitsProcessor};
use lmgen::GenerationConfig;
use serde_json::Value;

use crate::api::{ResponseFormat, SamplingParams, StringOrList};
use crate::error::{ApiError, RequestNames};
use crate::tool_calls::OutputFormat;

/// Most choices per request (OpenAI: 128).
pub const MAX_N: usize = 128;
/// Most stop sequences (OpenAI: 4).
pub const MAX_STOP: usize = 4;

/// What one request asks the engine for, validated.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Fields over the checkpoint's generation config (without `max_new_tokens`, set per prompt).
    pub overrides: GenerationConfig,
    pub max_tokens: Option<usize>,
    pub n: usize,
    pub seed: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
    pub stop: Vec<String>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logit_bias: Vec<(u32, f64)>,
    /// Top log-probabilities per token (`None`: no logprobs).
    pub logprobs: Option<usize>,
    /// `response_format` (or an enforced `tool_choice`) as a grammar (`None`: free text).
    pub grammar: Option<Grammar>,
    /// The field that asked for `grammar` (its errors name it; default `response_format`).
    pub grammar_param: Option<&'static str>,
    /// How a chat output is read for tool calls and reasoning (`None`: all content).
    pub output: Option<OutputFormat>,
    /// Anthropic's `thinking.budget_tokens`: the reasoning is closed after this many tokens.
    pub thinking_budget: Option<usize>,
}

/// `value` if it is finite and in `[lo, hi]` (`(lo, hi]` when `lo_open`; no upper bound when
/// `hi` is infinite).
fn range(param: &str, value: f64, lo: f64, hi: f64, lo_open: bool) -> Result<f64, ApiError> {
    let above = if lo_open { value > lo } else { value >= lo };
    if value.is_finite() && above && value <= hi {
        Ok(value)
    } else {
        let bound = match (lo_open, hi.is_finite()) {
            (true, false) => format!("> {lo}"),
            (false, false) => format!(">= {lo}"),
            (true, true) => format!("in ({lo}, {hi}]"),
            (false, true) => format!("in [{lo}, {hi}]"),
        };
        Err(ApiError::invalid(
            param,
            format!("`{param}` must be {bound}, got {value}"),
        ))
    }
}

/// The shared sampling fields; `max_tokens` is the endpoint's (chat also takes
/// `max_completion_tokens`), which the request calls `names.max_tokens`.
pub fn sampling(
    p: &SamplingParams,
    names: &RequestNames,
    max_tokens: Option<i64>,
    vocab_size: usize,
) -> Result<Plan, ApiError> {
    let mut plan = Plan {
        n: 1,
        ..Plan::default()
    };
    let o = &mut plan.overrides;
    if let Some(t) = p.temperature {
        let t = range("temperature", t, 0.0, 2.0, false)?;
        if t == 0.0 {
            o.do_sample = Some(false);
        } else {
            o.do_sample = Some(true);
            o.temperature = Some(t);
        }
    }
    if let Some(v) = p.top_p {
        o.top_p = Some(range("top_p", v, 0.0, 1.0, true)?);
    }
    match p.top_k {
        Some(k) if k < -1 => {
            return Err(ApiError::invalid(
                "top_k",
                format!("`top_k` must be -1 or 0 (disabled) or positive, got {k}"),
            ))
        }
        Some(k) => o.top_k = Some(k.max(0) as usize),
        None => {}
    }
    if let Some(v) = p.min_p {
        o.min_p = Some(range("min_p", v, 0.0, 1.0, false)?);
    }
    if let Some(v) = p.repetition_penalty {
        o.repetition_penalty = Some(range("repetition_penalty", v, 0.0, f64::INFINITY, true)?);
    }
    if let Some(m) = p.min_tokens {
        o.min_new_tokens = Some(usize::try_from(m).map_err(|_| {
            ApiError::invalid(
                "min_tokens",
                format!("`min_tokens` must be non-negative, got {m}"),
            )
        })?);
    }
    if let Some(v) = p.presence_penalty {
        plan.presence_penalty = Some(range("presence_penalty", v, -2.0, 2.0, false)?);
    }
    if let Some(v) = p.frequency_penalty {
        plan.frequency_penalty = Some(range("frequency_penalty", v, -2.0, 2.0, false)?);
    }
    if let Some(bias) = &p.logit_bias {
        for (k, &v) in bias {
            let id: u32 = k.parse().ok().filter(|&id: &u32| (id as usize) < vocab_size).ok_or_else(|| {
                ApiError::invalid(
                    "logit_bias",
                    format!("`logit_bias` key {k:?} is not a token id below the vocabulary size {vocab_size}"),
                )
            })?;
            if !v.is_finite() {
                return Err(ApiError::invalid(
                    "logit_bias",
                    "`logit_bias` values must be finite numbers",
                ));
            }
            plan.logit_bias.push((id, v.clamp(-100.0, 100.0)));
        }
        plan.logit_bias.sort_by_key(|&(id, _)| id);
    }
    if let Some(m) = max_tokens {
        if m < 1 {
            let param = names.max_tokens;
            return Err(ApiError::invalid(
                param,
                format!("`{param}` must be at least 1, got {m}"),
            ));
        }
        plan.max_tokens = Some(m as usize);
    }
    if let Some(n) = p.n {
        if n < 1 || n as usize > MAX_N {
            return Err(ApiError::invalid(
                "n",
                format!("`n` must be in [1, {MAX_N}], got {n}"),
            ));
        }
        plan.n = n as usize;
    }
    if let Some(seed) = p.seed {
        plan.seed = Some(u64::try_from(seed).map_err(|_| {
            ApiError::invalid(
                "seed",
                format!("`seed` must be a non-negative integer, got {seed}"),
            )
        })?);
    }
    plan.grammar = match &p.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(Grammar::JsonObject),
        Some(ResponseFormat::JsonSchema { json_schema }) => match &json_schema.schema {
            None => Some(Grammar::JsonSchema(serde_json::json!({}))),
            Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
                Some(Grammar::JsonSchema(schema.clone()))
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    "response_format.json_schema.schema",
                    format!("`response_format.json_schema.schema` must be a JSON Schema object, got {other}"),
                ))
            }
        },
    };
    // llama.cpp's `grammar` and vLLM's `guided_grammar`: GBNF, one constraint per request.
    for (param, gbnf) in [
        ("grammar", &p.grammar),
        ("guided_grammar", &p.guided_grammar),
    ] {
        let Some(gbnf) = gbnf else { continue };
        if plan.grammar.is_some() {
            return Err(ApiError::invalid(
                param,
                format!(
                    "`{param}` cannot be combined with `response_format` or another grammar field"
                ),
            ));
        }
        plan.grammar = Some(Grammar::Gbnf(gbnf.clone()));
        plan.grammar_param = Some(param);
    }
    plan.stream = p.stream.unwrap_or(false);
    if let Some(opts) = &p.stream_options {
        if !plan.stream {
            return Err(ApiError::invalid(
                "stream_options",
                "`stream_options` can only be set when `stream` is true",
            ));
        }
        plan.include_usage = opts.include_usage;
    }
    plan.stop = match &p.stop {
        None => Vec::new(),
        Some(StringOrList::One(s)) => vec![s.clone()],
        Some(StringOrList::Many(v)) => v.clone(),
    };
    if plan.stop.len() > MAX_STOP {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "`stop` takes at most {MAX_STOP} sequences, got {}",
                plan.stop.len()
            ),
        ));
    }
    if plan.stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "`stop` cannot contain an empty string",
        ));
    }
    if !plan.stop.is_empty() {
        plan.overrides.stop_strings = Some(plan.stop.clone());
    }
    Ok(plan)
}

impl Plan {
    /// The generation config of one choice: the checkpoint's, updated with the request's fields.
    pub fn config(&self, checkpoint: &GenerationConfig, max_new_tokens: usize) -> GenerationConfig {
        let mut config = checkpoint.clone();
        config.update(&self.overrides);
        config.max_new_tokens = Some(max_new_tokens);
        config.max_length = None;
        if config.do_sample == Some(true) && config.top_k.is_none() {
            config.top_k = Some(0); // OpenAI semantics: no implicit top-k
        }
        if config.do_sample != Some(true) {
            // Greedy: the sampling warpers do not run; drop them so validation stays quiet.
            config.temperature = None;
            config.top_p = None;
            config.top_k = None;
            config.min_p = None;
        }
        config
    }

    /// The OpenAI processors for a prompt of `prompt_len` tokens; `grammar`: `response_format`
    /// compiled once for the request, restarted for each choice.
    pub fn processors(
        &self,
        prompt_len: usize,
        grammar: Option<&GrammarLogitsProcessor>,
    ) -> lmgen::Result<Vec<Box<dyn LogitsProcessor>>> {
        let mut out: Vec<Box<dyn LogitsProcessor>> = Vec::new();
        if let Some(p) = self.presence_penalty.filter(|&p| p != 0.0) {
            out.push(Box::new(PresencePenaltyLogitsProcessor::new(
                p, prompt_len,
            )?));
        }
        if let Some(p) = self.frequency_penalty.filter(|&p| p != 0.0) {
            out.push(Box::new(FrequencyPenaltyLogitsProcessor::new(
                p, prompt_len,
            )?));
        }
        if !self.logit_bias.is_empty() {
            out.push(Box::new(LogitBiasLogitsProcessor::new(
                self.logit_bias.iter().copied(),
            )?));
        }
        // Last, as transformers runs user processors after its own: the mask sees the
        // penalised scores and leaves only what the grammar allows.
        if let Some(g) = grammar {
            out.push(Box::new(g.restart()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: RequestNames = RequestNames::COMPLETIONS;

    fn params(json: &str) -> SamplingParams {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn ranges_name_the_field() {
        for (body, field) in [
            (r#"{"temperature": -1}"#, "temperature"),
            (r#"{"temperature": 2.5}"#, "temperature"),
            (r#"{"top_p": 0}"#, "top_p"),
            (r#"{"top_k": -2}"#, "top_k"),
            (r#"{"min_p": 1.5}"#, "min_p"),
            (r#"{"repetition_penalty": 0}"#, "repetition_penalty"),
            (r#"{"presence_penalty": 3}"#, "presence_penalty"),
            (r#"{"frequency_penalty": -3}"#, "frequency_penalty"),
            (r#"{"logit_bias": {"x": 1}}"#, "logit_bias"),
            (r#"{"logit_bias": {"99999": 1}}"#, "logit_bias"),
            (r#"{"n": 0}"#, "n"),
            (r#"{"seed": -1}"#, "seed"),
            (r#"{"stop": ["a","b","c","d","e"]}"#, "stop"),
            (r#"{"stop": ""}"#, "stop"),
            (
                r#"{"stream_options": {"include_usage": true}}"#,
                "stream_options",
            ),
        ] {
            let e = sampling(&params(body), &RequestNames::COMPLETIONS, None, 100).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field), "{body}");
        }
        let e = sampling(&params("{}"), &RequestNames::COMPLETIONS, Some(0), 100).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let chat = RequestNames::chat(true);
        let e = sampling(&params("{}"), &chat, Some(0), 100).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_completion_tokens"));
    }

    #[test]
    fn temperature_zero_is_greedy() {
        let plan = sampling(
            &params(r#"{"temperature": 0, "top_p": 0.5}"#),
            &NAMES,
            None,
            10,
        )
        .unwrap();
        let c = plan.config(&GenerationConfig::default(), 4);
        assert_eq!(c.do_sample, Some(false));
        assert_eq!(c.top_p, None);
        let plan = sampling(&params(r#"{"temperature": 0.7}"#), &NAMES, None, 10).unwrap();
        let c = plan.config(&GenerationConfig::default(), 4);
        assert_eq!(
            (c.do_sample, c.temperature, c.top_k),
            (Some(true), Some(0.7), Some(0))
        );
    }
}
