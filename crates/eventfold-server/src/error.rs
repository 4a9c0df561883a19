use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eventfold_core::StoreError;
use eventfold_protocol::{WireError, error_status};

/// An error answered with the contract's body.
#[derive(Debug)]
pub struct ApiError(pub WireError);

impl ApiError {
    /// A new error with a status, code and message.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError(WireError::new(status, code, message))
    }
}

impl From<WireError> for ApiError {
    fn from(w: WireError) -> Self {
        ApiError(w)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if matches!(
            e,
            StoreError::Storage { .. } | StoreError::Corrupt { .. } | StoreError::Poisoned { .. }
        ) {
            tracing::error!(error = %e, "storage error answered to a request");
        }
        ApiError(error_status(&e))
    }
}

impl From<eventfold_core::ValidationError> for ApiError {
    fn from(e: eventfold_core::ValidationError) -> Self {
        ApiError(WireError::invalid(&e))
    }
}

impl From<eventfold_groups::GroupError> for ApiError {
    fn from(e: eventfold_groups::GroupError) -> Self {
        use eventfold_groups::GroupError;
        let status = match &e {
            GroupError::Invalid { .. } => 400,
            GroupError::NotFound { .. } => 404,
            GroupError::Store { cause, .. } => match cause {
                StoreError::Invalid(_) | StoreError::LimitExceeded { .. } => 400,
                StoreError::Closed => 503,
                _ => 500,
            },
            _ => 500,
        };
        if status >= 500 {
            tracing::error!(error = %e, "consumer group error answered to a request");
        }
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0.body)).into_response()
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
