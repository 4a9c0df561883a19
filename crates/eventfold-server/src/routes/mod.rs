//! The routes of the contract, a file per resource.

mod all;
pub(crate) mod appends;
mod backup;
pub(crate) mod encode;
pub(crate) mod group_bodies;
pub mod groups;
mod health;
pub(crate) mod moving;
mod scavenge;
pub(crate) mod schemas;
mod stats;
pub(crate) mod streams;
pub(crate) mod subjects;
pub(crate) mod subscribe;
pub mod table;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use bytes::Bytes;
use eventfold_protocol::ErrorCode;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The API's routes, and the console's when `console` is true.
pub fn router(state: AppState, console: bool) -> Router {
    // Every route comes from the operations table, which also makes `/openapi.json`.
    let mut by_path: Vec<(&'static str, axum::routing::MethodRouter<AppState>)> = Vec::new();
    for op in table::operations() {
        match by_path.iter_mut().find(|(p, _)| *p == op.path) {
            Some((_, mr)) => *mr = std::mem::take(mr).merge(op.handler),
            None => by_path.push((op.path, op.handler)),
        }
    }
    let mut router = Router::new();
    for (path, mr) in by_path {
        router = router.route(path, mr);
    }
    if console {
        router = router.merge(crate::console::router());
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read by `read_body` with the server's own limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "there is no resource at {}; see GET /openapi.json for the API",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{method} is not allowed on {}; see GET /openapi.json for the API",
            uri.path()
        ),
    )
}

/// Reads the request body, refusing one larger than `max` from its `Content-Length` alone
/// (before reading anything) or as soon as it grows past `max`, and one that has not arrived
/// whole within `timeout` ([`crate::ServerLimits::body_read_timeout`]).
pub async fn read_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    max: usize,
    timeout: std::time::Duration,
) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the request body is larger than {max} bytes; split the batch"),
        )
        .with_detail("max", max as u64)
    };
    let announced = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, max))
        .await
        .map_err(|_| body_read_timeout(timeout, "the request body"))?;
    read.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = err.source();
        }
        ApiError::new(
            ErrorCode::UnreadableBody,
            format!("the request body could not be read: {e}"),
        )
    })
}

/// The error of a body (or part of one) that did not arrive within `timeout`. Hyper closes the
/// connection after the answer: the rest of the body is not read.
pub fn body_read_timeout(timeout: std::time::Duration, what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BodyReadTimeout,
        format!(
            "{what} did not arrive whole within {} s; send it at once (a server may raise --body-read-timeout-secs for slow links)",
            timeout.as_secs()
        ),
    )
    .with_detail("timeout_secs", timeout.as_secs())
}

/// Deserializes a request body that must be a JSON object. serde's derived structs also take
/// an array of their fields in order (`[null, null]` was accepted as stream metadata, found by
/// schemathesis), which the contract does not allow.
pub fn from_json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        _ => Err("expected a JSON object".into()),
    }
}

/// Refuses a read limit above the configured maximum (the store checks it too, but a streamed
/// read asks the store in smaller pages).
pub fn check_read_limit(st: &AppState, limit: usize) -> ApiResult<()> {
    let max = st.limits.store.read_limit_max;
    if limit > max {
        return Err(eventfold_core::StoreError::LimitExceeded {
            limit: eventfold_core::LimitKind::ReadLimit,
            max: max as u64,
            actual: limit as u64,
        }
        .into());
    }
    Ok(())
}

/// Without an explicit `limit`, a read returns the contract's default (100) or the configured
/// maximum if that is lower; an explicit limit above the maximum is an error.
pub fn default_limit(limit_given: bool, parsed: usize, st: &AppState) -> usize {
    if limit_given {
        parsed
    } else {
        parsed.min(st.limits.store.read_limit_max)
    }
}

impl ApiError {
    fn with_detail(self, k: &str, v: impl Into<serde_json::Value>) -> Self {
        ApiError(self.0.with(k, v))
    }
}
