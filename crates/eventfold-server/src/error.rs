use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eventfold_core::StoreError;
use eventfold_groups::GroupError;
use eventfold_protocol::{ErrorCode, WireError, error_status};

/// The `Retry-After` of a `503 store_unavailable`, in seconds: long enough for a pool to open
/// a new connection, short enough that a client retrying after it loses little time once the
/// database is back.
pub const STORE_UNAVAILABLE_RETRY_AFTER_SECS: u32 = 1;

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
        } else if matches!(e, StoreError::Unavailable { .. }) {
            tracing::warn!(error = %e, "the store is unavailable; answered 503");
        } else if matches!(e, StoreError::StorageFull { .. }) {
            tracing::warn!(error = %e, "the disk is full; answered 507");
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
        let retry_later = self.0.code() == Some(ErrorCode::StoreUnavailable);
        let mut resp = (status, axum::Json(self.0.body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if retry_later {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(STORE_UNAVAILABLE_RETRY_AFTER_SECS),
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
            StoreError::Unavailable {
                detail: "connection refused".into(),
                outcome_unknown: false,
            },
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

    /// A store that cannot be reached for now is a 503 with `Retry-After` and the store's
    /// message (and whether a write's outcome is unknown), on a direct route and through a
    /// group alike.
    #[test]
    fn an_unavailable_store_is_a_503_with_retry_after() {
        let cause = StoreError::Unavailable {
            detail: "connection closed".into(),
            outcome_unknown: true,
        };
        let direct = ApiError::from(cause.clone());
        assert_eq!(direct.0.body.error.code, "store_unavailable");
        assert_eq!(
            direct.0.body.error.details.get("outcome_unknown"),
            Some(&serde_json::Value::Bool(true))
        );
        assert!(direct.0.body.error.message.contains("same event ids"));
        let via_group = ApiError::from(GroupError::Store {
            group: "g".into(),
            context: "append the ack record",
            cause,
        });
        for e in [direct, via_group] {
            let resp = e.into_response();
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                resp.headers()
                    .get(axum::http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()),
                Some("1")
            );
        }
        let closed = ApiError::from(StoreError::Closed).into_response();
        assert!(
            closed
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .is_none()
        );
    }
}
