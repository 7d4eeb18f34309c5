//! A conversation as the chat template takes it, for the endpoints whose requests are not
//! OpenAI chat ones (`/v1/messages`, `/v1/responses`): they build the messages a chat request
//! would send for the same conversation (`{"role", "content"}` with string content), so that the
//! template renders the same tokens.

use lmgen::TokenId;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, RequestNames};
use crate::generation::{Endpoint, Job};
use crate::state::AppState;
use crate::tool_calls::Tools;
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

/// How the rendered conversation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The template's generation prompt: the answer is a new assistant turn.
    NewTurn,
    /// The final (assistant) message left open: the answer continues it (transformers'
    /// `continue_final_message`; Anthropic's prefill).
    ContinueFinal,
}

/// The messages of a conversation, how it ends, and the tools its template shows.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub messages: Vec<Value>,
    pub ending: Ending,
    /// Function tools in OpenAI's chat shape, checked.
    pub tools: Option<Tools>,
    /// Extra chat template variables (as chat's `chat_template_kwargs`), such as
    /// `enable_thinking` for Anthropic's `thinking`.
    pub template_kwargs: Map<String, Value>,
}

/// `rendered` (the conversation without a generation prompt) cut right after the final message's
/// text, as transformers' `apply_chat_template(continue_final_message=True)` cuts it: at the last
/// place the stripped text stands, keeping its leading space if the template kept it.
fn continue_final(rendered: &str, final_text: &str) -> Option<String> {
    let stripped = final_text.trim();
    let at = rendered.rfind(stripped)?;
    let kept = final_text.trim_start();
    let end = match rendered[at..].starts_with(kept) {
        true => at + kept.len(),
        false => at + stripped.len(),
    };
    Some(rendered[..end].to_string())
}

/// The prompt of `conversation`: the checkpoint's chat template's text, and its tokens (encoded
/// without adding special tokens: the template has them), as for a chat request.
pub fn prompt(
    state: &AppState,
    conversation: &Conversation,
    names: &RequestNames,
) -> Result<(String, Vec<TokenId>), ApiError> {
    let refused = |e: lmgen::Error| ApiError::from_lmgen(&e, names);
    let messages = &conversation.messages;
    let new_turn = conversation.ending == Ending::NewTurn;
    let mut extra = conversation.template_kwargs.clone();
    if let Some(t) = &conversation.tools {
        extra.insert("tools".into(), Value::Array(t.list.clone()));
    }
    let mut text = state
        .tokenizer
        .apply_chat_template(messages, new_turn, &extra)
        .map_err(refused)?;
    if !new_turn {
        let last = messages.last().and_then(|m| m["content"].as_str());
        text = last
            .and_then(|last| continue_final(&text, last))
            .ok_or_else(|| {
                ApiError::invalid(
                    names.prompt,
                    "the final assistant turn (to continue) must be text that the chat template \
                     writes out",
                )
            })?;
    }
    let ids = state.tokenizer.encode_with(&text, false).map_err(refused)?;
    Ok((text, ids))
}

/// The job of a conversation: its prompt, run by the engine as a chat request's. Its output is
/// read as the chat endpoint reads it: tool calls, and reasoning (a template's `<think>`,
/// gpt-oss's analysis channel), which is left out of the answer.
pub fn job(
    state: &AppState,
    model: String,
    conversation: &Conversation,
    mut plan: Plan,
    names: RequestNames,
) -> Result<Job, ApiError> {
    let (text, ids) = prompt(state, conversation, &names)?;
    Tools::read_output(
        conversation.tools.as_ref(),
        &state.model_format,
        &text,
        &mut plan,
    )?;
    Ok(Job {
        endpoint: Endpoint::Chat,
        model,
        prompts: vec![ids],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_message_is_cut_as_transformers_cuts_it() {
        let rendered = "<|user|>\nhi</s>\n<|assistant|>\nThe answer</s>\n";
        assert_eq!(
            continue_final(rendered, "The answer").as_deref(),
            Some("<|user|>\nhi</s>\n<|assistant|>\nThe answer")
        );
        // Trailing space the template trimmed is not kept; a leading one it kept is.
        assert_eq!(
            continue_final("A: The answer</s>", "The answer ").as_deref(),
            Some("A: The answer")
        );
        assert_eq!(
            continue_final("A: hi hi</s>", "hi").as_deref(),
            Some("A: hi hi")
        );
        assert_eq!(continue_final("A: </s>", "missing"), None);
    }
}
