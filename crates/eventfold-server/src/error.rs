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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(self.0.body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
