//! Content negotiation: JSON by default, NDJSON or Server-Sent Events when asked for.

use axum::http::HeaderMap;
use axum::http::header::ACCEPT;

/// What a client asked to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    Json,
    Ndjson,
    EventStream,
}

/// Reads `Accept`. For subscriptions, plain JSON is not a streaming format, so `default`
/// decides (SSE there).
pub fn wants(headers: &HeaderMap, default: Wants) -> Wants {
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/x-ndjson") {
        Wants::Ndjson
    } else if accept.contains("text/event-stream") {
        Wants::EventStream
    } else {
        default
    }
}
