//! `POST /v1/responses`: OpenAI's Responses API on the checkpoint's chat template. `instructions`
//! is a system message before `input`, whose items become the messages a chat request would send
//! (`developer` as `system`; `input_text` / `output_text` parts joined by newlines), so a greedy answer
//! is the chat endpoint's; `text.format` is `response_format`. Function `tools`, `tool_choice`
//! and `parallel_tool_calls` are chat's (a tool's fields one level up); `function_call` input
//! items are an assistant message's `tool_calls` and `function_call_output` items `tool`
//! messages, so a tool round trip renders as chat's; `reasoning` input items are left out (as
//! templates drop earlier reasoning). Nothing is stored.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::api::responses::{
    Echo, FunctionCallInput, FunctionCallOutputInput, Input, InputContent, InputMessage, InputPart,
    InputRole, ResponsesRequest, TextFormat,
};
use crate::api::{typed_at, SamplingParams};
use crate::conversation::{block_type, job, joined, message, Conversation, Ending};
use crate::error::{ApiError, RequestNames};
use crate::generation::responses;
use crate::state::AppState;
use crate::tool_calls::Tools;
use crate::validate::sampling;

/// What a Responses request calls the prompt and the length limit.
const NAMES: RequestNames = RequestNames {
    prompt: "input",
    max_tokens: "max_output_tokens",
};

/// `POST /v1/responses`.
pub async fn responses(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = handle(state.clone(), body).await;
    super::count(
        &state,
        "responses",
        result.unwrap_or_else(axum::response::IntoResponse::into_response),
    )
}

async fn handle(
    state: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ResponsesRequest = super::parsed(body)?;
    state.check_text_model(&req.model)?;
    let stateless = "lmgen keeps no state between requests";
    if req.store == Some(true) {
        return Err(ApiError::invalid(
            "store",
            format!("`store` must be false: {stateless}"),
        ));
    }
    for (param, set) in [
        ("previous_response_id", req.previous_response_id.is_some()),
        ("conversation", req.conversation.is_some()),
        ("background", req.background == Some(true)),
    ] {
        if set {
            return Err(ApiError::invalid(
                param,
                format!("`{param}` is not supported: {stateless}"),
            ));
        }
    }
    let format = req.text.as_ref().and_then(|t| t.format.as_ref());
    if let Some(TextFormat::JsonSchema {
        schema: Some(schema),
        ..
    }) = format
    {
        if !(schema.is_object() || schema.is_boolean()) {
            return Err(ApiError::invalid(
                "text.format.schema",
                format!("`text.format.schema` must be a JSON Schema object, got {schema}"),
            ));
        }
    }
    let params = SamplingParams {
        temperature: req.temperature,
        top_p: req.top_p,
        stream: req.stream,
        response_format: format.map(Into::into),
        ..SamplingParams::default()
    };
    let mut plan = sampling(&params, &NAMES, req.max_output_tokens, state.vocab_size)?;
    plan.grammar_param = Some("text.format"); // a schema that does not compile
    let conversation = Conversation {
        messages: chat_messages(&req)?,
        ending: Ending::NewTurn,
        tools: tools(&req)?,
        template_kwargs: Default::default(),
    };
    if conversation.messages.is_empty() {
        return Err(ApiError::invalid("input", "`input` must not be empty"));
    }
    let echo = Echo::of(&req);
    let job = job(&state, req.model, &conversation, plan, NAMES)?;
    responses::respond(state, job, echo).await
}

/// The Responses `tools` (`{"type": "function", "name", "description", "parameters"}`) and
/// `tool_choice` (`{"type": "function", "name"}` for a named one) as the chat endpoint's, checked
/// as chat checks them (the errors name the Responses fields).
fn tools(req: &ResponsesRequest) -> Result<Option<Tools>, ApiError> {
    let list = req.tools.clone().unwrap_or_default();
    let mut functions = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let kind = tool.get("type");
        if kind.and_then(Value::as_str) != Some("function") {
            let param = format!("tools[{i}].type");
            return Err(ApiError::invalid(
                &param,
                format!(
                    "`{param}` must be \"function\" (the only tools served), got {}",
                    kind.unwrap_or(&Value::Null)
                ),
            ));
        }
        let mut function = Map::new();
        for key in ["name", "description", "parameters"] {
            if let Some(v) = tool.get(key) {
                function.insert(key.into(), v.clone());
            }
        }
        functions.push(json!({"type": "function", "function": function}));
    }
    let choice = match &req.tool_choice {
        Some(Value::Object(c)) if c.get("type").and_then(Value::as_str) == Some("function") => {
            let name = c.get("name").cloned().unwrap_or(Value::Null);
            Some(json!({"type": "function", "function": {"name": name}}))
        }
        Some(Value::Object(_)) => {
            return Err(ApiError::invalid(
                "tool_choice",
                "`tool_choice` must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": ...}",
            ))
        }
        other => other.clone(),
    };
    Tools::from_request(Some(&functions), choice.as_ref(), req.parallel_tool_calls).map_err(
        |mut e| {
            // Chat's names (`tools[0].function.name`) as the Responses request spells them.
            if let Some(param) = &mut e.param {
                *param = param.replace(".function.", ".");
            }
            e.message = e.message.replace(".function.", ".");
            e
        },
    )
}

/// `instructions` and `input` as chat template messages.
fn chat_messages(req: &ResponsesRequest) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    if let Some(i) = &req.instructions {
        out.push(message("system", i));
    }
    let items = match &req.input {
        Input::Text(t) => {
            out.push(message("user", t));
            return Ok(out);
        }
        Input::Items(items) => items,
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let types = [
            "message",
            "function_call",
            "function_call_output",
            "reasoning",
        ];
        let kind = block_type(item, &at, &types, Some("message"))?;
        let item = Value::Object(item.clone());
        match kind {
            "function_call" => {
                let call: FunctionCallInput = typed_at(&item, &at)?;
                let call = json!({"id": call.call_id, "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments}});
                // Calls right after an assistant message (or each other) are that message's.
                match out.last_mut() {
                    Some(m) if m["role"] == "assistant" => match m.get_mut("tool_calls") {
                        Some(Value::Array(calls)) => calls.push(call),
                        _ => {
                            m["tool_calls"] = json!([call]);
                        }
                    },
                    _ => out
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
                continue;
            }
            "function_call_output" => {
                let result: FunctionCallOutputInput = typed_at(&item, &at)?;
                let content = content_text(result.output, &format!("{at}.output"))?;
                out.push(
                    json!({"role": "tool", "tool_call_id": result.call_id, "content": content}),
                );
                continue;
            }
            "reasoning" => continue,
            _ => {}
        }
        let m: InputMessage = typed_at(&item, &at)?;
        let role = match m.role {
            InputRole::User => "user",
            InputRole::Assistant => "assistant",
            InputRole::System | InputRole::Developer => "system",
        };
        let content = content_text(m.content, &format!("{at}.content"))?;
        out.push(message(role, &content));
    }
    Ok(out)
}

/// Content (text, or text parts) as one text; `at` names it.
fn content_text(content: InputContent, at: &str) -> Result<String, ApiError> {
    Ok(match content {
        InputContent::Text(t) => t,
        InputContent::Parts(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.into_iter().enumerate() {
                let at = format!("{at}[{j}]");
                block_type(&part, &at, &InputPart::TYPES, None)?;
                match typed_at::<InputPart>(&Value::Object(part), &at)? {
                    InputPart::InputText { text } | InputPart::OutputText { text } => {
                        texts.push(text)
                    }
                }
            }
            joined(&texts)
        }
    })
}
