//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the status
//! that says who is at fault (4xx: the request, 429/503: try later, 5xx: us).
//!
//! Library errors are answered by one table ([`lmgen_error_answer`]); the setting they blame is
//! named as the request names it ([`RequestNames`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::response::{ErrorBody, ErrorObject};

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// `invalid_request_error`, `not_found_error`, `rate_limit_error`, `server_error`, ...
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    /// A machine-readable code (`context_length_exceeded`, `model_not_found`).
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 naming `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: None,
        }
    }

    /// 400 without a single field to blame.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            param: None,
            ..Self::invalid("", message)
        }
    }

    /// 400 `context_length_exceeded`.
    pub fn context_length(param: &str, message: impl Into<String>) -> Self {
        Self {
            code: Some("context_length_exceeded"),
            ..Self::invalid(param, message)
        }
    }

    /// 404 for a model this server does not serve.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{model}` does not exist."),
            kind: "not_found_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    /// 429: the queue is full.
    pub fn queue_full(limit: usize) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("the server is at capacity ({limit} requests in flight); retry later"),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
        }
    }

    /// 503: shutting down.
    pub fn shutting_down() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server is shutting down".into(),
            kind: "unavailable_error",
            param: None,
            code: None,
        }
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// The error object (also sent as an SSE event after the stream started).
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                message: self.message.clone(),
                kind: self.kind,
                param: self.param.clone(),
                code: self.code,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        let mut response = (self.status, Json(self.body())).into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// What a request calls the settings and arguments the library names with transformers' names
/// ([`lmgen::Error::field`]): the one HF -> OpenAI name map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestNames {
    /// The field that holds the prompt: `prompt` (completions) or `messages` (chat).
    pub prompt: &'static str,
    /// The field that holds the length limit: `max_tokens`, or `max_completion_tokens` where a
    /// chat request used that one.
    pub max_tokens: &'static str,
}

impl RequestNames {
    /// `POST /v1/completions`.
    pub const COMPLETIONS: Self = Self {
        prompt: "prompt",
        max_tokens: "max_tokens",
    };

    /// `POST /v1/chat/completions`; `max_completion_tokens`: the request set that field.
    pub fn chat(max_completion_tokens: bool) -> Self {
        Self {
            prompt: "messages",
            max_tokens: match max_completion_tokens {
                true => "max_completion_tokens",
                false => "max_tokens",
            },
        }
    }

    /// The request's name for transformers' `field` (a `GenerationConfig` field or `generate()`
    /// argument); a name the request shares (`temperature`, `top_k`, ...) stays as it is.
    pub fn param(&self, field: &str) -> String {
        match field {
            "max_new_tokens" | "max_length" => self.max_tokens,
            "min_new_tokens" | "min_length" => "min_tokens",
            "input_ids" | "attention_mask" => self.prompt,
            "stop_strings" => "stop",
            "num_return_sequences" => "n",
            // The server samples exactly when `temperature` is not 0.
            "do_sample" => "temperature",
            other => other,
        }
        .to_string()
    }
}

/// Whom an answer of [`lmgen_error_answer`] blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// Nothing in the request: the server's fault, or try later.
    Nothing,
    /// The setting the error names ([`lmgen::Error::field`]), if it names one.
    Field,
    /// The prompt (`prompt` / `messages`).
    Prompt,
}

/// How a library error is answered: status, OpenAI `type`, `code`, and what `param` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub blame: Blame,
}

/// The one table from [`lmgen::Error`] to HTTP answers:
///
/// | error | status | `type` | `code` | `param` |
/// |---|---|---|---|---|
/// | `GenerationConfig`, `Input` | 400 | `invalid_request_error` | - | the request's name of `field()` |
/// | `Unsupported` | 400 | `invalid_request_error` | `unsupported_parameter` | the request's name of `field()` |
/// | `Tokenizer` (encoding the request's text), `ChatTemplate` | 400 | `invalid_request_error` | - | `prompt` / `messages` |
/// | `OutOfMemory` | 503 + `Retry-After` | `server_error` | `out_of_memory` | - |
/// | `EngineStopped` | 503 + `Retry-After` | `server_error` | `engine_stopped` | - |
/// | `Tensor`, `Io`, `Json`, `Weights`, `Device`, `Streamer`, model loading, any other | 500 | `server_error` | - | - |
///
/// Out of memory is not the request's fault for good: the same request can fit later, a smaller
/// one now (OpenAI's clients retry a 503, and wait as `Retry-After` says). An engine that has
/// stopped (the server shutting down, or its engine thread gone) is the server's condition too:
/// another replica, or this one restarted, serves the same request.
pub fn lmgen_error_answer(e: &lmgen::Error) -> Answer {
    use lmgen::Error as E;
    let (status, kind, code, blame) = match e {
        E::GenerationConfig { .. } | E::Input { .. } => {
            (StatusCode::BAD_REQUEST, INVALID, None, Blame::Field)
        }
        E::Unsupported { .. } => (
            StatusCode::BAD_REQUEST,
            INVALID,
            Some("unsupported_parameter"),
            Blame::Field,
        ),
        E::Tokenizer(_) | E::ChatTemplate(_) => {
            (StatusCode::BAD_REQUEST, INVALID, None, Blame::Prompt)
        }
        E::OutOfMemory { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER,
            Some("out_of_memory"),
            Blame::Nothing,
        ),
        E::EngineStopped => (
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER,
            Some("engine_stopped"),
            Blame::Nothing,
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            SERVER,
            None,
            Blame::Nothing,
        ),
    };
    Answer {
        status,
        kind,
        code,
        blame,
    }
}

const INVALID: &str = "invalid_request_error";
const SERVER: &str = "server_error";

impl ApiError {
    /// The answer to library error `e` ([`lmgen_error_answer`]), its `param` in the request's
    /// `names`.
    pub fn from_lmgen(e: &lmgen::Error, names: &RequestNames) -> Self {
        let answer = lmgen_error_answer(e);
        let mut message = e.to_string();
        let param = match answer.blame {
            Blame::Nothing => None,
            Blame::Field => e.field().map(|field| {
                let param = names.param(field);
                if param != field {
                    // The message speaks transformers' names; say which field of the request.
                    message.push_str(&format!(" (`{field}` is `{param}` in this request)"));
                }
                param
            }),
            Blame::Prompt => Some(names.prompt.to_string()),
        };
        Self {
            status: answer.status,
            message,
            kind: answer.kind,
            param,
            code: answer.code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(e: lmgen::Error, names: RequestNames) -> (u16, Option<String>, Option<&'static str>) {
        let a = ApiError::from_lmgen(&e, &names);
        (a.status.as_u16(), a.param, a.code)
    }

    #[test]
    fn out_of_memory_is_503_with_retry_after() {
        let e = lmgen::Error::OutOfMemory {
            message: "the request needs 80.0 GiB, 12.0 GiB are free".into(),
        };
        let a = ApiError::from_lmgen(&e, &RequestNames::COMPLETIONS);
        assert_eq!(
            (a.status, a.kind, a.code, a.param.as_deref()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("out_of_memory"),
                None
            )
        );
        assert!(a.message.contains("out of GPU memory"), "{}", a.message);
        let response = a.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn a_stopped_engine_is_503_with_retry_after() {
        let a = ApiError::from_lmgen(&lmgen::Error::EngineStopped, &RequestNames::chat(false));
        assert_eq!(
            (a.status, a.kind, a.code, a.param.as_deref()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("engine_stopped"),
                None
            )
        );
        let response = a.into_response();
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn the_request_is_blamed_in_its_own_names() {
        let chat = RequestNames::chat(false);
        let chat_mct = RequestNames::chat(true);
        let c = RequestNames::COMPLETIONS;
        for (e, names, want) in [
            (
                lmgen::Error::config("`temperature` must be > 0"),
                c,
                Some("temperature"),
            ),
            (
                lmgen::Error::config("`top_k` must be >= 0"),
                chat,
                Some("top_k"),
            ),
            (
                lmgen::Error::input("`max_new_tokens` too large"),
                c,
                Some("max_tokens"),
            ),
            (
                lmgen::Error::input("`max_new_tokens` too large"),
                chat,
                Some("max_tokens"),
            ),
            (
                lmgen::Error::input("`max_new_tokens` too large"),
                chat_mct,
                Some("max_completion_tokens"),
            ),
            (
                lmgen::Error::config("`min_new_tokens` < 0"),
                c,
                Some("min_tokens"),
            ),
            (
                lmgen::Error::input("`input_ids` is empty"),
                c,
                Some("prompt"),
            ),
            (
                lmgen::Error::input("`input_ids` is empty"),
                chat,
                Some("messages"),
            ),
            (
                lmgen::Error::config("`stop_strings` must not be empty"),
                c,
                Some("stop"),
            ),
            (
                lmgen::Error::config("`repetition_penalty` must be > 0"),
                c,
                Some("repetition_penalty"),
            ),
            (lmgen::Error::input("a prompt has no tokens"), c, None),
            (
                lmgen::Error::Tokenizer("cannot encode".into()),
                c,
                Some("prompt"),
            ),
            (
                lmgen::Error::ChatTemplate("roles must alternate".into()),
                chat,
                Some("messages"),
            ),
        ] {
            let (status, param, _) = answer(e, names);
            assert_eq!((status, param.as_deref()), (400, want));
        }
        let e = ApiError::from_lmgen(
            &lmgen::Error::input("`max_new_tokens` too large"),
            &chat_mct,
        );
        assert!(
            e.message
                .ends_with("(`max_new_tokens` is `max_completion_tokens` in this request)"),
            "{}",
            e.message
        );
        let e = ApiError::from_lmgen(&lmgen::Error::config("`top_k` must be >= 0"), &c);
        assert!(e.message.ends_with(">= 0"), "{}", e.message);
        let (status, param, code) = answer(lmgen::Error::unsupported("`num_beams` > 1"), c);
        assert_eq!(
            (status, param.as_deref(), code),
            (400, Some("num_beams"), Some("unsupported_parameter"))
        );
    }

    #[test]
    fn the_servers_faults_are_500() {
        let io = lmgen::Error::Io {
            path: "x".into(),
            source: std::io::Error::other("disk"),
        };
        for e in [
            io,
            lmgen::Error::Weights {
                path: "w".into(),
                message: "truncated".into(),
            },
            lmgen::Error::Streamer("gone".into()),
            lmgen::Error::Device {
                name: "cuda:9".into(),
                message: "is not a device".into(),
            },
        ] {
            assert_eq!(answer(e, RequestNames::COMPLETIONS), (500, None, None));
        }
    }
}
