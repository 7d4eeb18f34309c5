//! A conversation as the chat template takes it, for the endpoints whose requests are not
//! OpenAI chat ones (`/v1/messages`, `/v1/responses`): they build the messages a chat request
//! would send for the same conversation (`{"role", "content"}` with string content), so that the
//! template renders the same tokens.

use lmgen::TokenId;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, RequestNames};
use crate::generation::{Endpoint, Job};
use crate::state::AppState;
use crate::validate::Plan;

/// Text blocks or parts as one message's content: their texts joined by newlines (as vLLM
/// flattens text parts for a template that takes strings; most templates do).
pub fn joined<S: AsRef<str>>(texts: &[S]) -> String {
    texts
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `{"role": role, "content": text}`.
pub fn message(role: &str, text: &str) -> Value {
    json!({"role": role, "content": text})
}

/// The prompt tokens of `messages`: the checkpoint's chat template with the generation prompt,
/// encoded without adding special tokens (the template has them), as for a chat request.
pub fn prompt_ids(
    state: &AppState,
    messages: &[Value],
    names: &RequestNames,
) -> Result<Vec<TokenId>, ApiError> {
    let refused = |e: lmgen::Error| ApiError::from_lmgen(&e, names);
    let text = state
        .tokenizer
        .apply_chat_template(messages, true, &Map::new())
        .map_err(refused)?;
    state.tokenizer.encode_with(&text, false).map_err(refused)
}

/// The job of a conversation: its prompt, run by the engine as a chat request's.
pub fn job(
    state: &AppState,
    model: String,
    messages: &[Value],
    plan: Plan,
    names: RequestNames,
) -> Result<Job, ApiError> {
    Ok(Job {
        endpoint: Endpoint::Chat,
        model,
        prompts: vec![prompt_ids(state, messages, &names)?],
        plan,
        names,
    })
}

/// The `type` of the object at `at` in the request (a content block, an input item), if it is one
/// of `types`; `default` if it has none. Otherwise a 400 naming `{at}.type` that says what lmgen
/// takes.
pub fn block_type<'a>(
    object: &'a Map<String, Value>,
    at: &str,
    types: &[&str],
    default: Option<&'a str>,
) -> Result<&'a str, ApiError> {
    let kind = match object.get("type") {
        None => default,
        Some(t) => t.as_str(),
    };
    match kind {
        Some(t) if types.contains(&t) => Ok(t),
        _ => {
            let param = format!("{at}.type");
            let got = object
                .get("type")
                .map_or("missing".to_string(), Value::to_string);
            Err(ApiError::invalid(
                &param,
                format!(
                    "`{param}` {got} is not supported: lmgen takes {}",
                    types.join(", ")
                ),
            ))
        }
    }
}
