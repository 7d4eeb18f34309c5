//! The HTTP routes, one file per endpoint family.

pub mod audio;
pub mod chat;
pub mod completions;
pub mod health;
pub mod messages;
pub mod models;
pub mod responses;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::generation::Endpoint;
use crate::metrics::RequestLabels;
use crate::state::AppState;

/// The response of a generation endpoint, counted in `lmgen_requests_total` by HTTP status
/// (a stream counts as 200 even if it ends with an error event).
pub fn counted(
    state: &AppState,
    endpoint: Endpoint,
    result: Result<Response, ApiError>,
) -> Response {
    count(
        state,
        endpoint.name(),
        result.unwrap_or_else(IntoResponse::into_response),
    )
}

/// `response`, counted in `lmgen_requests_total` under `endpoint` by its HTTP status.
pub fn count(state: &AppState, endpoint: &str, response: Response) -> Response {
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            endpoint: endpoint.into(),
            status: response.status().as_u16().to_string(),
        })
        .inc();
    response
}

/// The body as a `T`: [`body`], then a JSON object typed field by field (400 naming a wrong one).
pub fn parsed<T: serde::de::DeserializeOwned>(
    raw: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    crate::api::typed(&crate::api::object(&body(raw)?)?)
}

/// The raw body, with axum's rejections (body over the limit: 413) in OpenAI's shape.
pub fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        ApiError {
            status,
            message: rejection.body_text(),
            kind: "invalid_request_error",
            param: None,
            code: (status == axum::http::StatusCode::PAYLOAD_TOO_LARGE)
                .then_some("request_too_large"),
        }
    })
}
