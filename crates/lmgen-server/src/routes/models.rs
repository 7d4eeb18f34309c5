//! `GET /v1/models` and `GET /v1/models/{id}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;

use crate::api::response::{Model, ModelList};
use crate::error::ApiError;
use crate::state::AppState;

fn model_object(state: &AppState) -> Model {
    Model {
        id: state.model_id.clone(),
        object: Model::OBJECT,
        created: state.created,
        owned_by: "lmgen",
        max_model_len: state.context_length,
    }
}

pub async fn list(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList::new(vec![model_object(&state)]))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Model>, ApiError> {
    state.check_model(&id)?;
    Ok(Json(model_object(&state)))
}
