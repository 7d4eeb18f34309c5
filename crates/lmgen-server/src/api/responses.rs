//! OpenAI's Responses API (`POST /v1/responses`): the request, the `response` object and the
//! stream events, with the shapes `openai-python` parses (`types/responses/response.py`,
//! `response_output_message.py`, `response_usage.py`, `response_stream_event.py`).
//!
//! lmgen keeps no state: `store` must be false or absent and `previous_response_id` is refused.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{JsonSchemaFormat, ResponseFormat};

/// `POST /v1/responses`. Unknown fields are ignored, as on the other routes.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    /// Text (one user message), or a list of input items (read by the route, which names a
    /// wrong one).
    pub input: Input,
    /// A system message before the input.
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stream: Option<bool>,
    pub store: Option<bool>,
    pub previous_response_id: Option<String>,
    pub conversation: Option<Value>,
    pub background: Option<bool>,
    pub text: Option<TextConfig>,
    /// Function tools, `{"type": "function", "name", "description"?, "parameters"?}` (read by
    /// the route as the chat endpoint's).
    pub tools: Option<Vec<Value>>,
    /// `"auto"`, `"none"`, `"required"` or `{"type": "function", "name": ...}`.
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    /// Echoed in the response; it does not change the output.
    pub metadata: Option<serde_json::Map<String, Value>>,
}

/// `input`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or a list of input items (objects)")]
pub enum Input {
    Text(String),
    Items(Vec<serde_json::Map<String, Value>>),
}

/// An input message item: `{"type": "message"?, "role", "content"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct InputMessage {
    pub role: InputRole,
    pub content: InputContent,
}

/// A `function_call` input item: a call the model made, sent back with its output.
#[derive(Debug, Clone, Deserialize)]
pub struct FunctionCallInput {
    pub call_id: String,
    pub name: String,
    pub arguments: String,
}

/// A `function_call_output` input item: what the call `call_id` returned.
#[derive(Debug, Clone, Deserialize)]
pub struct FunctionCallOutputInput {
    pub call_id: String,
    pub output: InputContent,
}

/// The roles of input messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputRole {
    User,
    Assistant,
    System,
    /// A system message (OpenAI's name for one in its newer models).
    Developer,
}

/// An input message's `content`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or a list of content parts (objects)")]
pub enum InputContent {
    Text(String),
    Parts(Vec<serde_json::Map<String, Value>>),
}

/// The text parts of input content: the user's, and an earlier answer's (sent back as context).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InputPart {
    InputText { text: String },
    OutputText { text: String },
}

impl InputPart {
    /// The `type`s of [`InputPart`].
    pub const TYPES: [&'static str; 2] = ["input_text", "output_text"];
}

/// `text`: the output's format (`verbosity` is ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct TextConfig {
    pub format: Option<TextFormat>,
}

/// `text.format`: `response_format` of the chat API, with the schema's fields one level up.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TextFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default)]
        schema: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

impl From<&TextFormat> for ResponseFormat {
    fn from(f: &TextFormat) -> Self {
        match f {
            TextFormat::Text => ResponseFormat::Text,
            TextFormat::JsonObject => ResponseFormat::JsonObject,
            TextFormat::JsonSchema {
                name,
                description,
                schema,
                strict,
            } => ResponseFormat::JsonSchema {
                json_schema: JsonSchemaFormat {
                    name: name.clone(),
                    description: description.clone(),
                    schema: schema.clone(),
                    strict: *strict,
                },
            },
        }
    }
}

/// The request's settings a response object repeats.
#[derive(Debug, Clone, Serialize)]
pub struct Echo {
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub metadata: serde_json::Map<String, Value>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub store: bool,
    pub temperature: Option<f64>,
    pub text: TextOut,
    pub tool_choice: Value,
    pub tools: Vec<Value>,
    pub top_p: Option<f64>,
    pub truncation: &'static str,
}

impl Echo {
    /// The settings of `req` (nothing stored, no truncation).
    pub fn of(req: &ResponsesRequest) -> Self {
        let tools = req.tools.clone().unwrap_or_default();
        let format = req.text.as_ref().and_then(|t| t.format.clone());
        Self {
            instructions: req.instructions.clone(),
            max_output_tokens: req.max_output_tokens,
            metadata: req.metadata.clone().unwrap_or_default(),
            parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
            previous_response_id: None,
            store: false,
            temperature: req.temperature,
            text: TextOut {
                format: format.unwrap_or(TextFormat::Text),
            },
            tool_choice: match (&req.tool_choice, tools.is_empty()) {
                (Some(choice), _) => choice.clone(),
                (None, true) => Value::from("none"),
                (None, false) => Value::from("auto"),
            },
            tools,
            top_p: req.top_p,
            truncation: "disabled",
        }
    }
}

/// `text` of a response.
#[derive(Debug, Clone, Serialize)]
pub struct TextOut {
    pub format: TextFormat,
}

/// The `response` object.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseObject {
    pub id: String,
    pub object: &'static str,
    pub created_at: u64,
    /// `in_progress` (stream events before the end), `completed` or `incomplete`.
    pub status: &'static str,
    /// Always `null`: a failed request is an error answer.
    pub error: Option<Value>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub model: String,
    pub output: Vec<OutputItem>,
    /// `null` until the response is done.
    pub usage: Option<ResponseUsage>,
    #[serde(flatten)]
    pub echo: Echo,
}

impl ResponseObject {
    pub const OBJECT: &'static str = "response";
}

/// Why a response is `incomplete`: `max_output_tokens` (the length limit, or the context).
#[derive(Debug, Clone, Serialize)]
pub struct IncompleteDetails {
    pub reason: &'static str,
}

/// An output item: the assistant's message, a function call, or reasoning.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum OutputItem {
    Message(OutputMessage),
    FunctionCall(FunctionCallItem),
    Reasoning(ReasoningItem),
}

/// A `function_call` output item.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionCallItem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    /// What the `function_call_output` that answers it names.
    pub call_id: String,
    pub name: String,
    /// JSON text.
    pub arguments: String,
    pub status: &'static str,
}

/// A `reasoning` output item: the model's thinking, as `reasoning_text` content (no summary).
#[derive(Debug, Clone, Serialize)]
pub struct ReasoningItem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub summary: Vec<Value>,
    pub content: Vec<ReasoningText>,
    pub status: &'static str,
}

/// A `reasoning_text` content part.
#[derive(Debug, Clone, Serialize)]
pub struct ReasoningText {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
}

/// An assistant's message output item.
#[derive(Debug, Clone, Serialize)]
pub struct OutputMessage {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub status: &'static str,
    pub role: &'static str,
    pub content: Vec<OutputText>,
}

/// An `output_text` content part.
#[derive(Debug, Clone, Serialize)]
pub struct OutputText {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
    pub annotations: Vec<Value>,
    pub logprobs: Vec<Value>,
}

impl OutputText {
    pub fn new(text: String) -> Self {
        Self {
            kind: "output_text",
            text,
            annotations: Vec::new(),
            logprobs: Vec::new(),
        }
    }
}

/// `usage` of a response.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ResponseUsage {
    pub input_tokens: usize,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: usize,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: usize,
}

impl ResponseUsage {
    pub fn new(input_tokens: usize, output_tokens: usize, reasoning_tokens: usize) -> Self {
        Self {
            input_tokens,
            input_tokens_details: InputTokensDetails::default(),
            output_tokens,
            output_tokens_details: OutputTokensDetails { reasoning_tokens },
            total_tokens: input_tokens + output_tokens,
        }
    }
}

/// Always 0: lmgen does not report prefix-cache hits per request.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct InputTokensDetails {
    pub cached_tokens: usize,
    pub cache_write_tokens: usize,
}

/// The output tokens inside the reasoning (markers included; `tool_calls::ReasoningTokens`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: usize,
}

/// The typed stream events, in order: `response.created`, `response.in_progress`, then per
/// output item `response.output_item.added`, its content (a message's
/// `response.content_part.added`, `response.output_text.delta`s, `response.output_text.done`,
/// `response.content_part.done`; reasoning's `response.reasoning_text.delta`s and `.done`; a
/// call's `response.function_call_arguments.delta`s and `.done`) and
/// `response.output_item.done`; then `response.completed` (or `response.incomplete`); `error` if
/// it fails after the 200. Each carries the stream's `sequence_number` beside it ([`Sequenced`]).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum StreamEvent {
    #[serde(rename = "response.created")]
    Created { response: ResponseObject },
    #[serde(rename = "response.in_progress")]
    InProgress { response: ResponseObject },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputText,
    },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputText,
    },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        item_id: String,
        output_index: usize,
        delta: String,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        item_id: String,
        output_index: usize,
        name: String,
        arguments: String,
    },
    #[serde(rename = "response.reasoning_text.delta")]
    ReasoningTextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
    },
    #[serde(rename = "response.reasoning_text.done")]
    ReasoningTextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
    },
    #[serde(rename = "response.completed")]
    Completed { response: ResponseObject },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: ResponseObject },
    #[serde(rename = "error")]
    Error {
        code: Option<&'static str>,
        message: String,
        param: Option<String>,
    },
}

impl StreamEvent {
    /// The SSE event name (the `type`).
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::Created { .. } => "response.created",
            StreamEvent::InProgress { .. } => "response.in_progress",
            StreamEvent::OutputItemAdded { .. } => "response.output_item.added",
            StreamEvent::ContentPartAdded { .. } => "response.content_part.added",
            StreamEvent::OutputTextDelta { .. } => "response.output_text.delta",
            StreamEvent::OutputTextDone { .. } => "response.output_text.done",
            StreamEvent::ContentPartDone { .. } => "response.content_part.done",
            StreamEvent::OutputItemDone { .. } => "response.output_item.done",
            StreamEvent::FunctionCallArgumentsDelta { .. } => {
                "response.function_call_arguments.delta"
            }
            StreamEvent::FunctionCallArgumentsDone { .. } => {
                "response.function_call_arguments.done"
            }
            StreamEvent::ReasoningTextDelta { .. } => "response.reasoning_text.delta",
            StreamEvent::ReasoningTextDone { .. } => "response.reasoning_text.done",
            StreamEvent::Completed { .. } => "response.completed",
            StreamEvent::Incomplete { .. } => "response.incomplete",
            StreamEvent::Error { .. } => "error",
        }
    }
}

/// An event with its place in the stream.
#[derive(Debug, Clone, Serialize)]
pub struct Sequenced<'a> {
    #[serde(flatten)]
    pub event: &'a StreamEvent,
    pub sequence_number: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_carry_their_type_and_sequence_number() {
        let e = StreamEvent::OutputTextDelta {
            item_id: "msg_1".into(),
            output_index: 0,
            content_index: 0,
            delta: "Hi".into(),
            logprobs: Vec::new(),
        };
        assert_eq!(e.name(), "response.output_text.delta");
        let v = serde_json::to_value(Sequenced {
            event: &e,
            sequence_number: 4,
        })
        .unwrap();
        assert_eq!(
            v,
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
                   "content_index": 0, "delta": "Hi", "logprobs": [], "sequence_number": 4})
        );
        let f: TextFormat = serde_json::from_value(
            json!({"type": "json_schema", "name": "x", "schema": {"type": "object"}}),
        )
        .unwrap();
        assert!(matches!(
            ResponseFormat::from(&f),
            ResponseFormat::JsonSchema { ref json_schema } if json_schema.name == "x"
        ));
    }
}
