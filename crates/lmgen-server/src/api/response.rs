//! The response bodies, one struct per OpenAI object, with OpenAI's field names and shapes
//! (`openai-python`'s `types/completion.py`, `types/chat/chat_completion*.py`, `types/model.py`).
//!
//! Fields that OpenAI always sends are always serialized, `null` included (`system_fingerprint`,
//! `logprobs`, `finish_reason`); a chunk carries `usage` only when `stream_options.include_usage`
//! asked for it. Log-probabilities are the engine's `f32` values widened to `f64`.

use serde::ser::{Serialize, SerializeMap, Serializer};

/// `usage`: token counts of a request (every choice together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    /// Chat's breakdown of `completion_tokens` (absent on completions, as OpenAI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// `usage.completion_tokens_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CompletionTokensDetails {
    /// The generated tokens inside the reasoning (markers included; `tool_calls::ReasoningTokens`).
    pub reasoning_tokens: usize,
}

impl Usage {
    /// The counts, with `total_tokens` their sum.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            completion_tokens_details: None,
        }
    }

    /// With chat's `completion_tokens_details.reasoning_tokens`.
    pub fn with_reasoning_tokens(self, reasoning_tokens: usize) -> Self {
        Self {
            completion_tokens_details: Some(CompletionTokensDetails { reasoning_tokens }),
            ..self
        }
    }
}

/// `usage` of a chunk: absent unless `stream_options.include_usage`; then `null` on every chunk
/// but the last one, which has no choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkUsage {
    /// Not asked for: no `usage` key.
    Omitted,
    /// Asked for: `null`, or the counts on the usage chunk.
    Sent(Option<Usage>),
}

impl ChunkUsage {
    fn is_omitted(&self) -> bool {
        matches!(self, ChunkUsage::Omitted)
    }
}

impl Serialize for ChunkUsage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ChunkUsage::Omitted | ChunkUsage::Sent(None) => s.serialize_none(),
            ChunkUsage::Sent(Some(usage)) => usage.serialize(s),
        }
    }
}

/// What every completion, chat completion and chunk begins with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Head {
    pub id: String,
    /// `text_completion`, `chat.completion` or `chat.completion.chunk`.
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    /// Always `null`: no fingerprint is given.
    pub system_fingerprint: Option<String>,
}

/// `text_completion` (`POST /v1/completions`, not streamed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Completion {
    #[serde(flatten)]
    pub head: Head,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}

impl Completion {
    pub const OBJECT: &'static str = "text_completion";
}

/// A chunk of a streamed completion (also `object: "text_completion"`, as OpenAI sends).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompletionChunk {
    #[serde(flatten)]
    pub head: Head,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "ChunkUsage::is_omitted")]
    pub usage: ChunkUsage,
}

/// A choice of a completion, or what a chunk adds to it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// The legacy completions' `logprobs`: parallel lists, one entry per token.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f64>,
    pub top_logprobs: Vec<TopLogprobMap>,
    /// Byte offset of each token in the choice's text.
    pub text_offset: Vec<usize>,
}

/// `{token: logprob}` of one position, best first. Two ids with the same text are one key (the
/// later value wins, at the first one's place), as in a JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopLogprobMap(Vec<(String, f64)>);

impl TopLogprobMap {
    /// Adds `token` (or updates its value).
    pub fn insert(&mut self, token: String, logprob: f64) {
        match self.0.iter_mut().find(|(t, _)| *t == token) {
            Some(entry) => entry.1 = logprob,
            None => self.0.push((token, logprob)),
        }
    }
}

impl FromIterator<(String, f64)> for TopLogprobMap {
    fn from_iter<I: IntoIterator<Item = (String, f64)>>(iter: I) -> Self {
        let mut map = Self::default();
        for (token, logprob) in iter {
            map.insert(token, logprob);
        }
        map
    }
}

impl Serialize for TopLogprobMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (token, logprob) in &self.0 {
            map.serialize_entry(token, logprob)?;
        }
        map.end()
    }
}

/// `chat.completion` (`POST /v1/chat/completions`, not streamed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatCompletion {
    #[serde(flatten)]
    pub head: Head,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

impl ChatCompletion {
    pub const OBJECT: &'static str = "chat.completion";
}

/// A choice of a chat completion.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ChatMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// The assistant's message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatMessage {
    pub role: &'static str,
    /// The text outside tool calls and reasoning (`null` when a parse leaves none).
    pub content: Option<String>,
    /// The text inside the family's thinking markers (vLLM's field), when there is some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallOut>>,
}

/// A call of `message.tool_calls`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ToolCallOut {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

/// `function` of a call: the name and the arguments as JSON text.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// A call's part in a chunk: `index`, `id`, `type` and the name first, then the arguments.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionCallDelta,
}

/// `function` of a call's part in a chunk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FunctionCallDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatCompletionChunk {
    #[serde(flatten)]
    pub head: Head,
    pub choices: Vec<ChatChunkChoice>,
    #[serde(skip_serializing_if = "ChunkUsage::is_omitted")]
    pub usage: ChunkUsage,
}

impl ChatCompletionChunk {
    pub const OBJECT: &'static str = "chat.completion.chunk";
}

/// What a chunk adds to choice `index`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// `delta`: the role on a choice's first chunk, then its new text; `{}` on the chunk that only
/// finishes it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// Chat `logprobs`: an entry per token.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
    pub refusal: Option<String>,
}

/// A token of chat `logprobs.content`, with its most likely alternatives.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f64,
    /// The token's UTF-8 bytes.
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative in `top_logprobs`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f64,
    pub bytes: Vec<u8>,
}

/// `model`, an entry of `GET /v1/models` (`max_model_len` as vLLM adds it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Model {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    pub max_model_len: usize,
}

impl Model {
    pub const OBJECT: &'static str = "model";
}

/// `GET /v1/models`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<Model>,
}

impl ModelList {
    pub fn new(data: Vec<Model>) -> Self {
        Self {
            object: "list",
            data,
        }
    }
}

/// An error answer: `{"error": {...}}`, also sent as an event when a stream fails after its 200.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// OpenAI's error object; `param` and `code` are `null` when there is none.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorObject {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chunk_usage_is_absent_null_or_the_counts() {
        let chunk = |usage| CompletionChunk {
            head: Head {
                id: "c".into(),
                object: Completion::OBJECT,
                created: 1,
                model: "m".into(),
                system_fingerprint: None,
            },
            choices: Vec::new(),
            usage,
        };
        let v = serde_json::to_value(chunk(ChunkUsage::Omitted)).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        let want = [
            "id",
            "object",
            "created",
            "model",
            "system_fingerprint",
            "choices",
        ];
        assert_eq!(keys, want);
        assert!(
            v.get("usage").is_none() && v["system_fingerprint"].is_null(),
            "{v}"
        );
        let v = serde_json::to_value(chunk(ChunkUsage::Sent(None))).unwrap();
        assert!(v["usage"].is_null() && v.get("usage").is_some(), "{v}");
        let v = serde_json::to_value(chunk(ChunkUsage::Sent(Some(Usage::new(3, 4))))).unwrap();
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        );
    }

    #[test]
    fn top_logprobs_keep_rank_order_and_one_key_per_text() {
        let map: TopLogprobMap = [
            ("b".to_string(), -0.1),
            ("a".into(), -1.0),
            ("b".into(), -2.0),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            serde_json::to_string(&map).unwrap(),
            r#"{"b":-2.0,"a":-1.0}"#
        );
    }

    #[test]
    fn deltas_and_errors() {
        let d = ChatDelta::default();
        assert_eq!(serde_json::to_value(d).unwrap(), json!({}));
        let d = ChatDelta {
            role: Some("assistant"),
            content: Some(String::new()),
            ..ChatDelta::default()
        };
        assert_eq!(
            serde_json::to_value(d).unwrap(),
            json!({"role": "assistant", "content": ""})
        );
        let e = ErrorBody {
            error: ErrorObject {
                message: "m".into(),
                kind: "invalid_request_error",
                param: None,
                code: None,
            },
        };
        assert_eq!(
            serde_json::to_value(e).unwrap(),
            json!({"error": {"message": "m", "type": "invalid_request_error", "param": null, "code": null}})
        );
    }
}
