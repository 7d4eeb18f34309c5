//! The HTTP routes, one file per endpoint family.

pub mod chat;
pub mod completions;
pub mod health;
pub mod models;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;

use crate::error::ApiError;

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
