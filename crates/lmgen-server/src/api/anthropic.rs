//! Anthropic's Messages API (`POST /v1/messages`): the request, the `message` object, the stream
//! events and the error envelope, with Anthropic's names and shapes (`anthropic-sdk-python`'s
//! `types/message_create_params.py`, `types/message.py`, `types/raw_message_stream_event.py`).

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// `POST /v1/messages`. Unknown fields are ignored, as on the OpenAI routes.
#[derive(Debug, Clone, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub messages: Vec<InputMessage>,
    /// Required, as Anthropic: most tokens to generate.
    pub max_tokens: i64,
    /// A string or a list of text blocks.
    pub system: Option<SystemPrompt>,
    /// In `[0, 1]` (Anthropic's range); 0 is greedy.
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub stop_sequences: Option<Vec<String>>,
    pub stream: Option<bool>,
    /// `{"user_id"}`: accepted, it does not change the output.
    pub metadata: Option<serde_json::Map<String, Value>>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    /// Extended thinking: `{"type": "enabled", "budget_tokens"}` or `{"type": "disabled"}`
    /// (read as [`ThinkingConfig`] by the route, which names a wrong field).
    pub thinking: Option<Value>,
}

/// `thinking`: `{"type": "enabled", "budget_tokens": N}` turns the template's thinking on
/// (`enable_thinking`), returns the reasoning as `thinking` blocks and closes it after `N`
/// tokens; `{"type": "disabled"}` turns it off. (`adaptive` is refused: lmgen has no way to let
/// the model decide.)
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ThinkingConfig {
    Enabled {
        budget_tokens: i64,
        /// `summarized` (the default here: the thinking as generated, no summary is made) or
        /// `omitted` (the blocks come back with empty `thinking`).
        #[serde(default)]
        display: Option<ThinkingDisplay>,
    },
    Disabled {},
}

/// `thinking.display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThinkingDisplay {
    Summarized,
    Omitted,
}

/// `system`: text, or text blocks.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or a list of text blocks")]
pub enum SystemPrompt {
    Text(String),
    Blocks(Vec<TextBlockParam>),
}

/// A `{"type": "text", "text"}` block of `system`.
#[derive(Debug, Clone, Deserialize)]
pub struct TextBlockParam {
    #[serde(rename = "type")]
    pub kind: TextType,
    pub text: String,
}

/// The only block type `system` takes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextType {
    Text,
}

/// A turn of the conversation.
#[derive(Debug, Clone, Deserialize)]
pub struct InputMessage {
    pub role: Role,
    /// A string or a list of content blocks (each read by the route, which names a wrong one).
    pub content: InputContent,
}

/// `user` or `assistant` (the system prompt is `system`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

/// A message's `content`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or a list of content blocks (objects)")]
pub enum InputContent {
    Text(String),
    Blocks(Vec<serde_json::Map<String, Value>>),
}

/// The content blocks lmgen maps onto chat template messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    /// An assistant's tool call: a chat message's `tool_calls` entry.
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Map<String, Value>,
    },
    /// A tool's answer, in a user turn: a chat `tool` message.
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<ToolResultContent>,
        /// Accepted; chat templates have no place for it.
        #[serde(default)]
        is_error: Option<bool>,
    },
    /// An assistant's earlier reasoning, sent back: the chat message's `reasoning_content`
    /// (templates that read it render it; `signature` is not checked).
    Thinking {
        thinking: String,
        signature: String,
    },
}

impl ContentBlock {
    /// The `type`s of [`ContentBlock`].
    pub const TYPES: [&'static str; 4] = ["text", "tool_use", "tool_result", "thinking"];
}

/// A `tool_result`'s `content`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or a list of text blocks")]
pub enum ToolResultContent {
    Text(String),
    Blocks(Vec<TextBlockParam>),
}

/// A tool of `tools`: a client tool (`type` absent or `custom`) with a JSON Schema for its input.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolParam {
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Value,
}

/// `tool_choice`: `{"type": "auto" | "any" | "tool" | "none", "name"?, "disable_parallel_tool_use"?}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolChoiceParam {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub disable_parallel_tool_use: Option<bool>,
}

/// `usage` of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: usize,
    pub output_tokens: usize,
}

/// A content block of the answer.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    /// A tool call (`input` is `{}` while streaming: its JSON comes in `input_json_delta`s).
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// The model's reasoning (first). lmgen signs nothing: `signature` is empty.
    Thinking {
        thinking: String,
        signature: String,
    },
}

impl Block {
    pub fn thinking(thinking: String) -> Self {
        Block::Thinking {
            thinking,
            signature: String::new(),
        }
    }

    pub fn text(text: String) -> Self {
        Block::Text { text }
    }

    /// A new tool call id (`toolu_` and 24 random hex digits).
    pub fn tool_use_id() -> String {
        format!(
            "toolu_{:016x}{:08x}",
            rand::random::<u64>(),
            rand::random::<u32>()
        )
    }
}

/// The `message` object: the answer, and (empty, without a stop reason) the stream's first event.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: String,
    pub content: Vec<Block>,
    /// `end_turn`, `max_tokens`, `stop_sequence` or `tool_use`; `null` while streaming.
    pub stop_reason: Option<&'static str>,
    /// The stop sequence that ended the text.
    pub stop_sequence: Option<String>,
    pub usage: Usage,
}

impl Message {
    pub const TYPE: &'static str = "message";
}

/// `delta` of a `content_block_delta` event.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta {
        text: String,
    },
    /// A piece of a tool call's `input` (JSON text).
    InputJsonDelta {
        partial_json: String,
    },
    /// A piece of a thinking block's text.
    ThinkingDelta {
        thinking: String,
    },
    /// A thinking block's signature, just before it stops (empty: lmgen signs nothing).
    SignatureDelta {
        signature: String,
    },
}

/// `delta` of a `message_delta` event.
#[derive(Debug, Clone, Serialize)]
pub struct MessageDelta {
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<String>,
}

/// `usage` of a `message_delta` event: the tokens generated.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DeltaUsage {
    pub output_tokens: usize,
}

/// The events of a streamed message, in order: `message_start`, `content_block_start`, `ping`,
/// `content_block_delta`s, `content_block_stop`, `message_delta`, `message_stop`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: Message,
    },
    ContentBlockStart {
        index: usize,
        content_block: Block,
    },
    Ping,
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDelta,
        usage: DeltaUsage,
    },
    MessageStop,
}

impl StreamEvent {
    /// The SSE event name (the `type`).
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::Ping => "ping",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
        }
    }
}

/// Anthropic's error envelope `{"type": "error", "error": {"type", "message"}}`, also the data
/// of an `error` event in a stream.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorResponse {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: String,
}

impl From<&ApiError> for ErrorResponse {
    /// The same error with Anthropic's `type` for its status (the status stays the OpenAI
    /// routes'); the field at fault is in the message.
    fn from(e: &ApiError) -> Self {
        let kind = match e.status {
            StatusCode::BAD_REQUEST => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "api_error",
        };
        let message = match &e.param {
            Some(p) if !p.is_empty() && !e.message.contains(&format!("`{p}`")) => {
                format!("{p}: {}", e.message)
            }
            _ => e.message.clone(),
        };
        Self {
            kind: "error",
            error: ErrorDetail { kind, message },
        }
    }
}

/// The answer to `e` in Anthropic's envelope, with the status (and `Retry-After`) of the OpenAI
/// routes.
pub fn error_response(e: ApiError) -> Response {
    let body = serde_json::to_vec(&ErrorResponse::from(&e)).unwrap_or_default();
    let mut response = e.into_response();
    *response.body_mut() = Body::from(body);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_and_errors_have_anthropics_shapes() {
        let e = StreamEvent::ContentBlockDelta {
            index: 0,
            delta: BlockDelta::TextDelta { text: "Hi".into() },
        };
        assert_eq!(e.name(), "content_block_delta");
        assert_eq!(
            serde_json::to_value(e).unwrap(),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}})
        );
        assert_eq!(
            serde_json::to_value(StreamEvent::Ping).unwrap(),
            json!({"type": "ping"})
        );
        // Thinking: the block, its deltas, and the config as Anthropic's types spell them.
        assert_eq!(
            serde_json::to_string(&Block::thinking("Hmm.".into())).unwrap(),
            r#"{"type":"thinking","thinking":"Hmm.","signature":""}"#
        );
        for (delta, want) in [
            (
                BlockDelta::ThinkingDelta {
                    thinking: "a".into(),
                },
                json!({"type": "thinking_delta", "thinking": "a"}),
            ),
            (
                BlockDelta::SignatureDelta {
                    signature: String::new(),
                },
                json!({"type": "signature_delta", "signature": ""}),
            ),
        ] {
            assert_eq!(serde_json::to_value(delta).unwrap(), want);
        }
        let config: ThinkingConfig =
            serde_json::from_value(json!({"type": "enabled", "budget_tokens": 2048})).unwrap();
        assert!(matches!(
            config,
            ThinkingConfig::Enabled {
                budget_tokens: 2048,
                display: None
            }
        ));
        assert!(serde_json::from_value::<ThinkingConfig>(json!({"type": "disabled"})).is_ok());
        assert!(serde_json::from_value::<ThinkingConfig>(json!({"type": "adaptive"})).is_err());
        let e = ApiError::invalid("top_p", "`top_p` must be in (0, 1], got 2");
        assert_eq!(
            serde_json::to_value(ErrorResponse::from(&e)).unwrap(),
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "`top_p` must be in (0, 1], got 2"}})
        );
        let e = ApiError::invalid("messages", "roles must alternate");
        assert_eq!(
            ErrorResponse::from(&e).error.message,
            "messages: roles must alternate"
        );
        assert_eq!(
            ErrorResponse::from(&ApiError::queue_full(2)).error.kind,
            "rate_limit_error"
        );
    }
}
