use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eventfold_core::StoreError;
use eventfold_groups::GroupError;
use eventfold_protocol::{ErrorCode, WireError, error_status};

/// An error answered with the contract's body.
#[derive(Debug)]
pub struct ApiError(pub WireError);

impl ApiError {
    /// A new error with a code (which decides the status) and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(WireError::new(code, message))
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

impl From<GroupError> for ApiError {
    /// A store error inside a group error gets the store error's code and status, the same as
    /// on every other route; the message keeps the group's context.
    fn from(e: GroupError) -> Self {
        let code = match &e {
            GroupError::Store { cause, .. } => eventfold_protocol::store_error_code(cause),
            other => ErrorCode::parse(other.code()).unwrap_or(ErrorCode::InternalError),
        };
        if code.status() >= 500 {
            tracing::error!(error = %e, "consumer group error answered to a request");
        }
        ApiError::new(code, e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A store error is answered with one code and status whichever route meets it: an append
    /// (the store directly) or a consumer group's ack (through the group).
    #[test]
    fn a_store_error_gets_the_same_status_on_every_route() {
        let stream = eventfold_core::StreamName::new("order-1").expect("name");
        for cause in [
            StoreError::Poisoned {
                cause: "fsync failed".into(),
            },
            StoreError::Closed,
            StoreError::io("write", std::io::Error::other("disk")),
            StoreError::StreamNotFound { stream },
            StoreError::LimitExceeded {
                limit: eventfold_core::LimitKind::BatchBytes,
                max: 1,
                actual: 2,
            },
        ] {
            let direct = ApiError::from(cause.clone());
            let via_group = ApiError::from(GroupError::Store {
                group: "g".into(),
                context: "append the ack record",
                cause: cause.clone(),
            });
            assert_eq!(direct.0.status, via_group.0.status, "{cause}");
            assert_eq!(direct.0.body.error.code, via_group.0.body.error.code);
        }
        let poisoned = ApiError::from(GroupError::Store {
            group: "g".into(),
            context: "append the ack record",
            cause: StoreError::Poisoned { cause: "x".into() },
        });
        assert_eq!(poisoned.0.status, 503);
    }
}
