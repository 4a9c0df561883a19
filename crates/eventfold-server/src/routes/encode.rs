//! Events encoded for answers: one JSON page, or one NDJSON line per event. Shared by the
//! stream, `$all` and parked-event reads.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// `{"events": [...], "next": n}` without an intermediate copy.
pub fn json_page(events: &[eventfold_core::RecordedEvent], next: Option<u64>) -> Response {
    #[derive(serde::Serialize)]
    struct Page<'a> {
        events: &'a [eventfold_core::RecordedEvent],
        next: Option<u64>,
    }
    axum::Json(Page { events, next }).into_response()
}

/// One JSON line per event.
pub fn ndjson_line(e: &eventfold_core::RecordedEvent) -> Bytes {
    let mut v = serde_json::to_vec(e).expect("an event always serializes");
    v.push(b'\n');
    Bytes::from(v)
}
