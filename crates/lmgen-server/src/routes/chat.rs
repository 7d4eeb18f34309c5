//! `POST /v1/chat/completions`: the messages rendered with the checkpoint's chat template.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use serde_json::Value;

use crate::api::{parse, ChatCompletionRequest};
use crate::error::{ApiError, RequestNames};
use crate::generation::{respond, Endpoint, Job};
use crate::state::AppState;
use crate::tool_calls::Tools;
use crate::validate::sampling;

/// Template variables that are request fields, not `chat_template_kwargs`.
const RESERVED: [&str; 3] = ["messages", "add_generation_prompt", "tools"];

/// Most top log-probabilities per token (OpenAI: 20).
const MAX_TOP_LOGPROBS: i64 = 20;

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = handle(state.clone(), body).await;
    super::counted(&state, Endpoint::Chat, result)
}

async fn handle(
    state: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = super::body(body)?;
    let req: ChatCompletionRequest = parse(&body)?;
    state.check_text_model(&req.model)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    let tools = Tools::from_request(
        req.tools.as_deref(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls,
    )?;
    let names = RequestNames::chat(req.max_completion_tokens.is_some());
    let max_tokens = req.max_completion_tokens.or(req.sampling.max_tokens);
    let mut plan = sampling(&req.sampling, &names, max_tokens, state.vocab_size)?;
    match (req.logprobs, req.top_logprobs) {
        (_, Some(k)) if !(0..=MAX_TOP_LOGPROBS).contains(&k) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("`top_logprobs` must be in [0, {MAX_TOP_LOGPROBS}], got {k}"),
            ))
        }
        (Some(true), k) => plan.logprobs = Some(k.unwrap_or(0) as usize),
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "when using `top_logprobs`, `logprobs` must be set to true",
            ))
        }
        _ => {}
    }
    let refused = |e: lmgen::Error| ApiError::from_lmgen(&e, &names);
    let mut extra = req.chat_template_kwargs.clone().unwrap_or_default();
    if let Some(name) = RESERVED.iter().find(|&&k| extra.contains_key(k)) {
        return Err(ApiError::invalid(
            "chat_template_kwargs",
            format!("`chat_template_kwargs` cannot set `{name}`, a request field"),
        ));
    }
    if let Some(t) = &tools {
        extra.insert("tools".into(), Value::Array(t.list.clone()));
    }
    let text = state
        .tokenizer
        .apply_chat_template(&req.messages, true, &extra)
        .map_err(refused)?;
    let ids = state.tokenizer.encode_with(&text, false).map_err(refused)?;
    Tools::read_output(tools.as_ref(), &state.model_format, &text, &mut plan)?;
    respond(
        state,
        Job {
            endpoint: Endpoint::Chat,
            model: req.model,
            prompts: vec![ids],
            plan,
            names,
        },
    )
    .await
}
