use axum::Json;
use axum::extract::State;
use eventfold_core::StoreError;
use eventfold_protocol::ErrorCode;
use serde_json::json;

use crate::authorized::{Authorized, OnServer};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The process is up.
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Storage is open and writable (for a remote store: its database answers).
pub async fn ready(State(st): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    match st.store.health().await {
        Ok(()) => Ok(Json(json!({"status": "ok"}))),
        Err(StoreError::Unavailable { detail, .. }) => Err(ApiError::new(
            ErrorCode::NotReady,
            format!(
                "the store cannot be reached ({detail}); this server answers again by itself once it can"
            ),
        )),
        Err(e) => Err(ApiError::new(
            ErrorCode::NotReady,
            format!("storage is not writable: {e}"),
        )),
    }
}

/// Prometheus metrics.
pub async fn metrics(
    State(st): State<AppState>,
    _req: Authorized<OnServer>,
) -> impl axum::response::IntoResponse {
    super::groups::observe(&st).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(),
    )
}
