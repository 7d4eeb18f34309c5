//! `POST /v1/responses`: OpenAI's Responses API on the checkpoint's chat template. `instructions`
//! is a system message before `input`, whose items become the messages a chat request would send
//! (`developer` as `system`; `input_text` / `output_text` parts joined by newlines), so a greedy answer
//! is the chat endpoint's; `text.format` is `response_format`. Nothing is stored.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use serde_json::Value;

use crate::api::responses::{
    Echo, Input, InputContent, InputMessage, InputPart, InputRole, ResponsesRequest, TextFormat,
};
use crate::api::{typed_at, SamplingParams};
use crate::conversation::{block_type, job, joined, message, Conversation, Ending};
use crate::error::{ApiError, RequestNames};
use crate::generation::responses;
use crate::state::AppState;
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
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid(
            "tools",
            "`tools` is not supported on /v1/responses yet",
        ));
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
        tools: None,
    };
    if conversation.messages.is_empty() {
        return Err(ApiError::invalid("input", "`input` must not be empty"));
    }
    let echo = Echo::of(&req);
    let job = job(&state, req.model, &conversation, plan, NAMES)?;
    responses::respond(state, job, echo).await
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
        block_type(item, &at, &["message"], Some("message"))?;
        let m: InputMessage = typed_at(&Value::Object(item.clone()), &at)?;
        let role = match m.role {
            InputRole::User => "user",
            InputRole::Assistant => "assistant",
            InputRole::System | InputRole::Developer => "system",
        };
        let content = match m.content {
            InputContent::Text(t) => t,
            InputContent::Parts(parts) => {
                let mut texts = Vec::with_capacity(parts.len());
                for (j, part) in parts.into_iter().enumerate() {
                    let at = format!("{at}.content[{j}]");
                    block_type(&part, &at, &InputPart::TYPES, None)?;
                    match typed_at::<InputPart>(&Value::Object(part), &at)? {
                        InputPart::InputText { text } | InputPart::OutputText { text } => {
                            texts.push(text)
                        }
                    }
                }
                joined(&texts)
            }
        };
        out.push(message(role, &content));
    }
    Ok(out)
}
