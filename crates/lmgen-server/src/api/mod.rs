//! The request bodies of the OpenAI API that lmgen serves (`/v1/completions`,
//! `/v1/chat/completions`), parsed with the path of any wrongly typed field.
//!
//! Unknown fields are accepted and ignored (clients send `extra_body` fields and newer API
//! fields); fields that would change the output and are not implemented are refused in
//! `validate.rs`.

pub mod anthropic;
pub mod audio;
pub mod response;
pub mod responses;

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// `"text"` or `["text", ...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// A completion prompt: text, texts, token ids, or lists of token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a string, a list of strings, a list of token ids or a list of lists of token ids"
)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(expecting = "an object such as {\"include_usage\": true}")]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling and stopping fields both endpoints share (OpenAI's, then the Hugging Face extras).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SamplingParams {
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub stop: Option<StringOrList>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logit_bias: Option<HashMap<String, f64>>,
    /// Hugging Face `top_k` (0 or -1: disabled).
    pub top_k: Option<i64>,
    /// Hugging Face `min_p`.
    pub min_p: Option<f64>,
    /// Hugging Face `repetition_penalty` (multiplicative, prompt included).
    pub repetition_penalty: Option<f64>,
    /// vLLM's `min_tokens` (Hugging Face `min_new_tokens`): EOS is masked until this many.
    pub min_tokens: Option<i64>,
    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": {...}}`: the output is
    /// constrained to JSON (or a JSON Schema) by a grammar, token by token.
    pub response_format: Option<ResponseFormat>,
    /// llama.cpp server's `grammar`: a GBNF grammar the output must be a sentence of.
    pub grammar: Option<String>,
    /// vLLM's `guided_grammar`: the same (GBNF, as vLLM's grammar backends read it).
    pub guided_grammar: Option<String>,
}

/// OpenAI's `response_format`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Unconstrained text (the default).
    Text,
    /// Any JSON object.
    JsonObject,
    /// A JSON value valid under `json_schema.schema`.
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, Deserialize)]
pub struct JsonSchemaFormat {
    /// The schema's name (OpenAI requires it; lmgen only checks it is a string).
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The JSON Schema; absent means any JSON value, as OpenAI.
    #[serde(default)]
    pub schema: Option<Value>,
    /// OpenAI's `strict`: lmgen always enforces the schema with a grammar, strict or not.
    #[serde(default)]
    pub strict: Option<bool>,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    /// Read from the same object by [`parse`] (not `#[serde(flatten)]`, which loses the path of
    /// a wrongly typed field).
    #[serde(skip)]
    pub sampling: SamplingParams,
    /// Top log-probabilities per token, 0..=5.
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub best_of: Option<i64>,
    pub suffix: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<Value>,
    /// Read from the same object by [`parse`].
    #[serde(skip)]
    pub sampling: SamplingParams,
    pub max_completion_tokens: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    /// Function tools, passed to the chat template as sent (checked in `tool_calls::Tools`).
    pub tools: Option<Vec<Value>>,
    /// `"auto"` (default), `"none"`, `"required"` or `{"type": "function", "function": {"name"}}`.
    pub tool_choice: Option<Value>,
    /// Several calls in one answer (default true).
    pub parallel_tool_calls: Option<bool>,
    /// Extra chat template variables (vLLM's), such as `{"enable_thinking": false}`.
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
}

/// The parts of a chat message that the chat template relies on, typed only so that a wrong one
/// is named (`messages[0].content`); the template gets each message as sent.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a message object with a `role`")]
struct MessageShape {
    #[serde(rename = "role")]
    _role: String,
    #[serde(default, rename = "content")]
    _content: Option<MessageContent>,
}

/// A message's `content`: text, or a list of content parts (objects such as
/// `{"type": "text", "text": "..."}`).
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a string, a list of content parts (objects) or null"
)]
enum MessageContent {
    Text(#[allow(dead_code)] String),
    Parts(#[allow(dead_code)] Vec<serde_json::Map<String, Value>>),
}

/// The messages of a chat request, checked for their shape.
#[derive(Debug, Deserialize)]
struct MessageShapes {
    #[serde(rename = "messages")]
    _messages: Vec<MessageShape>,
}

/// A request body that carries the shared sampling fields.
pub trait WithSampling {
    fn sampling_mut(&mut self) -> &mut SamplingParams;

    /// Checks of the body that its own field types leave out.
    fn check_shape(_body: &Value) -> Result<(), ApiError> {
        Ok(())
    }
}

impl WithSampling for CompletionRequest {
    fn sampling_mut(&mut self) -> &mut SamplingParams {
        &mut self.sampling
    }
}

impl WithSampling for ChatCompletionRequest {
    fn sampling_mut(&mut self) -> &mut SamplingParams {
        &mut self.sampling
    }

    fn check_shape(body: &Value) -> Result<(), ApiError> {
        typed::<MessageShapes>(body).map(drop)
    }
}

/// Parses a JSON body into `T` and its sampling fields; a wrongly typed or missing field is a
/// 400 naming it.
pub fn parse<T: DeserializeOwned + WithSampling>(body: &[u8]) -> Result<T, ApiError> {
    let value = object(body)?;
    let mut request: T = typed(&value)?;
    *request.sampling_mut() = typed(&value)?;
    T::check_shape(&value)?;
    Ok(request)
}

/// The body as a JSON object; anything else is a 400.
pub fn object(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(value)
}

/// Maps whose keys are data, not fields: an error in one of their values names the map.
const DATA_MAPS: &[&str] = &["logit_bias"];

/// The request parameter at `path`, as OpenAI writes it: `stream_options.include_usage`,
/// `messages[0].content`; a value of a [`DATA_MAPS`] map is the map (`logit_bias`).
fn param_at(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut param = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => param.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !param.is_empty() {
                    param.push('.');
                }
                param.push_str(key);
            }
            Segment::Enum { .. } | Segment::Unknown => break,
        }
        if DATA_MAPS.contains(&param.as_str()) {
            break;
        }
    }
    param
}

/// `value` as a `T`; a wrongly typed or missing field is a 400 naming its path.
pub fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut param = param_at(e.path());
        let inner = e.into_inner().to_string();
        // A missing field is reported at its parent's path; name the field itself.
        if let Some(field) = inner
            .strip_prefix("missing field `")
            .and_then(|s| s.split('`').next())
        {
            if !param.is_empty() {
                param.push('.');
            }
            param.push_str(field);
        }
        ApiError::invalid(&param, format!("invalid `{param}`: {inner}"))
    })
}

/// `value`, found at `at` in the request (`messages[0].content[1]`), as a `T`: [`typed`] with
/// the path of a wrong field below `at`.
pub fn typed_at<T: DeserializeOwned>(value: &Value, at: &str) -> Result<T, ApiError> {
    typed(value).map_err(|e| {
        let param = match e.param.as_deref() {
            None | Some("") => at.to_string(),
            Some(p) if p.starts_with('[') => format!("{at}{p}"),
            Some(p) => format!("{at}.{p}"),
        };
        let inner = e
            .message
            .split_once("`: ")
            .map_or(e.message.as_str(), |(_, m)| m);
        ApiError::invalid(&param, format!("invalid `{param}`: {inner}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_types_name_the_field() {
        let e = parse::<CompletionRequest>(br#"{"model":"m","prompt":"x","temperature":"hot"}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = parse::<CompletionRequest>(br#"{"prompt":"x"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        let e = parse::<ChatCompletionRequest>(
            br#"{"model":"m","messages":[],"stream_options":{"include_usage":3}}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("stream_options.include_usage"));
        for (body, param) in [
            (
                r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"a"},{"content":"b"}]}"#,
                "messages[1].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[1]}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"m","messages":[],"logit_bias":{"5":"x"}}"#,
                "logit_bias",
            ),
            (
                r#"{"model":"m","messages":[],"logit_bias":[]}"#,
                "logit_bias",
            ),
        ] {
            let e = parse::<ChatCompletionRequest>(body.as_bytes()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
        let parts = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]},{"role":"assistant","content":null,"tool_calls":[]}]}"#;
        assert!(parse::<ChatCompletionRequest>(parts).is_ok());
        let ok = parse::<ChatCompletionRequest>(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":"x","top_k":3,"extra":1}"#,
        )
        .unwrap();
        assert!(matches!(ok.sampling.stop, Some(StringOrList::One(ref s)) if s == "x"));
        assert_eq!(ok.sampling.top_k, Some(3));
    }
}
