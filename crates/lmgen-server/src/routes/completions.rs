//! `POST /v1/completions` (OpenAI's legacy completions: a prompt in, text out).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;

use crate::api::{parse, CompletionRequest, Prompt};
use crate::error::{ApiError, RequestNames};
use crate::generation::{respond, Endpoint, Job};
use crate::state::AppState;
use crate::validate::sampling;

/// Most top log-probabilities per token on this endpoint (OpenAI: 5).
const MAX_LOGPROBS: i64 = 5;

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = handle(state.clone(), body).await;
    super::counted(&state, Endpoint::Completions, result)
}

async fn handle(
    state: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = super::body(body)?;
    let req: CompletionRequest = parse(&body)?;
    state.check_text_model(&req.model)?;
    if req.echo == Some(true) {
        return Err(ApiError::invalid("echo", "`echo` is not supported"));
    }
    if req.best_of.is_some_and(|b| b != 1) {
        return Err(ApiError::invalid(
            "best_of",
            "`best_of` other than 1 is not supported",
        ));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "`suffix` is not supported"));
    }
    let names = RequestNames::COMPLETIONS;
    let mut plan = sampling(
        &req.sampling,
        &names,
        req.sampling.max_tokens,
        state.vocab_size,
    )?;
    if let Some(k) = req.logprobs {
        if !(0..=MAX_LOGPROBS).contains(&k) {
            return Err(ApiError::invalid(
                "logprobs",
                format!("`logprobs` must be in [0, {MAX_LOGPROBS}], got {k}"),
            ));
        }
        plan.logprobs = Some(k as usize);
    }
    let tokenizer = state.tokenizer.clone();
    let encode = |text: &str| {
        tokenizer
            .encode(text)
            .map_err(|e| ApiError::from_lmgen(&e, &names))
    };
    let prompts = match &req.prompt {
        Prompt::Text(t) => vec![encode(t)?],
        Prompt::Texts(ts) => ts.iter().map(|t| encode(t)).collect::<Result<_, _>>()?,
        Prompt::Ids(ids) => vec![ids.clone()],
        Prompt::IdLists(lists) => lists.clone(),
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid("prompt", "`prompt` is empty"));
    }
    if let Some(&bad) = prompts
        .iter()
        .flatten()
        .find(|&&id| id as usize >= state.vocab_size)
    {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "token id {bad} is outside the vocabulary ({})",
                state.vocab_size
            ),
        ));
    }
    respond(
        state,
        Job {
            endpoint: Endpoint::Completions,
            model: req.model,
            prompts,
            plan,
            names,
        },
    )
    .await
}
