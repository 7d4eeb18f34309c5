//! `POST /v1/messages`: Anthropic's Messages API on the checkpoint's chat template. The
//! conversation becomes the messages a chat request would send (`system` first; `tool_use`
//! blocks as an assistant's `tool_calls`, `tool_result` blocks as `tool` messages), so a greedy
//! answer is the chat endpoint's; `tools` and `tool_choice` are chat's, and calls come back as
//! `tool_use` blocks. A final assistant turn is a prefill: the answer continues it.
//! `thinking` (`enabled` with `budget_tokens`, or `disabled`) sets the template's
//! `enable_thinking`; enabled, the reasoning comes back as a `thinking` block before the others and
//! is closed after `budget_tokens` tokens (`tool_calls::ThinkingBudgetLogitsProcessor`); thinking
//! blocks sent back in assistant turns reach the template as `reasoning_content`. Without
//! `thinking` the template's default holds and the reasoning is not returned.
//! Errors are in Anthropic's envelope.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::api::anthropic::{
    error_response, ContentBlock, InputContent, MessagesRequest, Role, SystemPrompt,
    TextBlockParam, ThinkingConfig, ThinkingDisplay, ToolChoiceParam, ToolParam, ToolResultContent,
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
    let thinking = thinking(&req)?;
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
    let mut plan = sampling(&params, &NAMES, Some(req.max_tokens), state.vocab_size)?;
    plan.thinking_budget = thinking.budget;
    let conversation = Conversation {
        messages: chat_messages(&req)?,
        // A final assistant turn is a prefill: the answer continues it.
        ending: match req.messages.last().map(|m| m.role) {
            Some(Role::Assistant) => Ending::ContinueFinal,
            _ => Ending::NewTurn,
        },
        tools,
        template_kwargs: thinking.template_kwargs,
    };
    let job = job(&state, req.model, &conversation, plan, NAMES)?;
    let thinks = job
        .plan
        .output
        .as_ref()
        .is_some_and(|o| o.think && !o.harmony);
    if thinking.display.is_some() && !thinks {
        return Err(ApiError::invalid(
            "thinking",
            "`thinking`: the served model's chat template writes no thinking markers \
             (`<think>`, `[THINK]`, ...), so its reasoning cannot be returned or budgeted",
        ));
    }
    messages::respond(state, job, thinking.display).await
}

/// What `thinking` asks for.
struct Thinking {
    /// `enable_thinking` for the template (absent: its default).
    template_kwargs: Map<String, Value>,
    /// How thinking blocks come back (`None`: not at all).
    display: Option<ThinkingDisplay>,
    budget: Option<usize>,
}

/// `thinking`, checked: `budget_tokens` at least 1024 and below `max_tokens`, as Anthropic.
fn thinking(req: &MessagesRequest) -> Result<Thinking, ApiError> {
    let mut out = Thinking {
        template_kwargs: Map::new(),
        display: None,
        budget: None,
    };
    let Some(value) = &req.thinking else {
        return Ok(out);
    };
    match typed_at::<ThinkingConfig>(value, "thinking")? {
        ThinkingConfig::Disabled {} => {
            out.template_kwargs
                .insert("enable_thinking".into(), json!(false));
        }
        ThinkingConfig::Enabled {
            budget_tokens,
            display,
        } => {
            if budget_tokens < 1024 || budget_tokens >= req.max_tokens {
                return Err(ApiError::invalid(
                    "thinking.budget_tokens",
                    format!(
                        "`thinking.budget_tokens` must be at least 1024 and less than \
                         `max_tokens` ({}), got {budget_tokens}",
                        req.max_tokens
                    ),
                ));
            }
            out.template_kwargs
                .insert("enable_thinking".into(), json!(true));
            out.display = Some(display.unwrap_or(ThinkingDisplay::Summarized));
            out.budget = Some(budget_tokens as usize);
        }
    }
    Ok(out)
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
        let mut reasoning: Vec<String> = Vec::new();
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
                ContentBlock::Thinking { thinking, .. } if m.role == Role::Assistant => {
                    reasoning.push(thinking);
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
                            "`{at}.type`: `tool_use` and `thinking` blocks belong to assistant \
                             turns and `tool_result` blocks to user turns"
                        ),
                    ))
                }
            }
        }
        if calls.is_empty() && reasoning.is_empty() {
            flush(&mut out, &mut text);
        } else {
            let mut m = Map::new();
            m.insert("role".into(), json!(role));
            // Calls alone: `null` content, as chat clients send it; with reasoning, text (Qwen3's
            // template strips the content that follows its reasoning).
            let content = match (text.is_empty(), calls.is_empty(), reasoning.is_empty()) {
                (true, false, true) => Value::Null,
                _ => Value::String(joined(&text)),
            };
            m.insert("content".into(), content);
            if !reasoning.is_empty() {
                m.insert("reasoning_content".into(), json!(joined(&reasoning)));
            }
            if !calls.is_empty() {
                m.insert("tool_calls".into(), Value::Array(calls));
            }
            out.push(Value::Object(m));
        }
    }
    Ok(out)
}
