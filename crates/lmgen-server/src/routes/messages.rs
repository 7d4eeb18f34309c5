//! `POST /v1/messages`: Anthropic's Messages API on the checkpoint's chat template. The
//! conversation becomes the messages a chat request would send (`system` first; `tool_use`
//! blocks as an assistant's `tool_calls`, `tool_result` blocks as `tool` messages), so a greedy
//! answer is the chat endpoint's; `tools` and `tool_choice` are chat's, and calls come back as
//! `tool_use` blocks. A final assistant turn is a prefill: the answer continues it.
//! Errors are in Anthropic's envelope.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::api::anthropic::{
    error_response, ContentBlock, InputContent, MessagesRequest, Role, SystemPrompt,
    TextBlockParam, ToolChoiceParam, ToolParam, ToolResultContent,
};
use crate::api::{typed_at, SamplingParams, StringOrList};
use crate::conversation::{block_type, job, joined, message, Conversation, Ending};
use crate::error::{ApiError, RequestNames};
use crate::generation::messages;
use crate::state::AppState;
use crate::tool_calls::Tools;
use crate::validate::{sampling, MAX_STOP};

/// What a Messages request calls the prompt and the length limit.
const NAMES: RequestNames = RequestNames {
    prompt: "messages",
    max_tokens: "max_tokens",
};

/// `POST /v1/messages`.
pub async fn messages(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let response = handle(state.clone(), body)
        .await
        .unwrap_or_else(error_response);
    super::count(&state, "messages", response)
}

async fn handle(
    state: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: MessagesRequest = super::parsed(body)?;
    state.check_text_model(&req.model)?;
    let tools = tools(&req)?;
    if let Some(kind) = req.thinking.as_ref().and_then(|t| t.get("type")) {
        if kind != "disabled" {
            return Err(ApiError::invalid(
                "thinking",
                "extended `thinking` is not supported",
            ));
        }
    }
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    if let Some(t) = req.temperature {
        if !(0.0..=1.0).contains(&t) {
            return Err(ApiError::invalid(
                "temperature",
                format!("`temperature` must be in [0, 1], got {t}"),
            ));
        }
    }
    let stops = req.stop_sequences.clone().unwrap_or_default();
    if stops.len() > MAX_STOP || stops.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop_sequences",
            format!("`stop_sequences` takes at most {MAX_STOP} non-empty strings"),
        ));
    }
    let params = SamplingParams {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stream: req.stream,
        stop: (!stops.is_empty()).then_some(StringOrList::Many(stops)),
        ..SamplingParams::default()
    };
    let plan = sampling(&params, &NAMES, Some(req.max_tokens), state.vocab_size)?;
    let conversation = Conversation {
        messages: chat_messages(&req)?,
        // A final assistant turn is a prefill: the answer continues it.
        ending: match req.messages.last().map(|m| m.role) {
            Some(Role::Assistant) => Ending::ContinueFinal,
            _ => Ending::NewTurn,
        },
        tools,
    };
    let job = job(&state, req.model, &conversation, plan, NAMES)?;
    messages::respond(state, job).await
}

/// Anthropic's `tools` and `tool_choice` as the chat endpoint's (`input_schema` as a function's
/// `parameters`; `any` as `required`, `tool` as a named function;
/// `disable_parallel_tool_use` as `parallel_tool_calls: false`), checked as chat checks them.
fn tools(req: &MessagesRequest) -> Result<Option<Tools>, ApiError> {
    let choice = match &req.tool_choice {
        None => None,
        Some(choice) => Some(typed_at::<ToolChoiceParam>(choice, "tool_choice")?),
    };
    let list = req.tools.clone().unwrap_or_default();
    let mut functions = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        if tool.get("type").is_some_and(|k| k != "custom") {
            let param = format!("{at}.type");
            return Err(ApiError::invalid(
                &param,
                format!("`{param}`: only custom (client) tools are served"),
            ));
        }
        let tool: ToolParam = typed_at(tool, &at)?;
        let mut function = Map::new();
        function.insert("name".into(), json!(tool.name));
        if let Some(d) = tool.description {
            function.insert("description".into(), json!(d));
        }
        function.insert("parameters".into(), tool.input_schema);
        functions.push(json!({"type": "function", "function": function}));
    }
    let parallel = choice
        .as_ref()
        .and_then(|c| c.disable_parallel_tool_use)
        .map(|disable| !disable);
    let choice = match choice {
        None => None,
        Some(c) => Some(match (c.kind.as_str(), c.name) {
            ("auto", _) => json!("auto"),
            ("none", _) => json!("none"),
            ("any", _) => json!("required"),
            ("tool", Some(name)) => json!({"type": "function", "function": {"name": name}}),
            ("tool", None) => {
                return Err(ApiError::invalid(
                    "tool_choice.name",
                    "`tool_choice.name` is required with `\"type\": \"tool\"`",
                ))
            }
            (other, _) => {
                return Err(ApiError::invalid(
                    "tool_choice.type",
                    format!("`tool_choice.type` must be auto, any, tool or none, got {other:?}"),
                ))
            }
        }),
    };
    if functions.is_empty() {
        return match choice.as_ref().and_then(Value::as_str) {
            None | Some("auto" | "none") => Ok(None),
            Some(_) => Err(ApiError::invalid(
                "tool_choice",
                "`tool_choice` that asks for a tool call needs `tools`",
            )),
        };
    }
    Tools::from_request(Some(&functions), choice.as_ref(), parallel)
}

/// Text blocks as message content.
fn texts(blocks: &[TextBlockParam]) -> String {
    joined(&blocks.iter().map(|b| b.text.as_str()).collect::<Vec<_>>())
}

/// The conversation as chat template messages.
fn chat_messages(req: &MessagesRequest) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    match &req.system {
        None => {}
        Some(SystemPrompt::Text(t)) => out.push(message("system", t)),
        Some(SystemPrompt::Blocks(blocks)) => out.push(message("system", &texts(blocks))),
    }
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let blocks = match &m.content {
            InputContent::Text(t) => {
                out.push(message(role, t));
                continue;
            }
            InputContent::Blocks(blocks) if blocks.is_empty() => {
                let param = format!("messages[{i}].content");
                return Err(ApiError::invalid(
                    &param,
                    format!("`{param}` must not be empty"),
                ));
            }
            InputContent::Blocks(blocks) => blocks,
        };
        // Consecutive text blocks make one message (their texts joined by newlines); tool calls
        // join the assistant's message.
        let mut text: Vec<String> = Vec::new();
        let mut calls: Vec<Value> = Vec::new();
        let flush = |out: &mut Vec<Value>, text: &mut Vec<String>| {
            if !text.is_empty() {
                out.push(message(role, &joined(text)));
                text.clear();
            }
        };
        for (j, block) in blocks.iter().enumerate() {
            let at = format!("messages[{i}].content[{j}]");
            block_type(block, &at, &ContentBlock::TYPES, None)?;
            match typed_at::<ContentBlock>(&Value::Object(block.clone()), &at)? {
                ContentBlock::Text { text: t } => text.push(t),
                // The arguments as an object, as transformers' templates take them.
                ContentBlock::ToolUse { id, name, input } if m.role == Role::Assistant => {
                    calls.push(json!({
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": input},
                    }));
                }
                ContentBlock::ToolResult {
                    tool_use_id,
                    content,
                    ..
                } if m.role == Role::User => {
                    flush(&mut out, &mut text);
                    let content = match content {
                        None => String::new(),
                        Some(ToolResultContent::Text(t)) => t,
                        Some(ToolResultContent::Blocks(b)) => texts(&b),
                    };
                    let mut tool = message("tool", &content);
                    tool["tool_call_id"] = Value::String(tool_use_id);
                    out.push(tool);
                }
                _ => {
                    return Err(ApiError::invalid(
                        &format!("{at}.type"),
                        format!(
                            "`{at}.type`: `tool_use` blocks belong to assistant turns and \
                             `tool_result` blocks to user turns"
                        ),
                    ))
                }
            }
        }
        if calls.is_empty() {
            flush(&mut out, &mut text);
        } else {
            let mut m = Map::new();
            m.insert("role".into(), json!(role));
            let content = match text.is_empty() {
                true => Value::Null,
                false => Value::String(joined(&text)),
            };
            m.insert("content".into(), content);
            m.insert("tool_calls".into(), Value::Array(calls));
            out.push(Value::Object(m));
        }
    }
    Ok(out)
}
