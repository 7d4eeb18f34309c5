//! `GET /health` (200 while serving, 503 while shutting down) and `GET /metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.shutting_down.load(Ordering::SeqCst) {
        return ApiError::shutting_down().into_response();
    }
    if !state.manager.is_running() {
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            ..ApiError::internal("the engine is not running")
        }
        .into_response();
    }
    (StatusCode::OK, "ok").into_response()
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(&state.manager.stats());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
