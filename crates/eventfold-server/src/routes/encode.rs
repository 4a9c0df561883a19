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

/// Bytes of an event's line besides its names, data and metadata: the keys, the id, the
/// numbers and the timestamp (about 230).
const LINE_FIXED_BYTES: usize = 256;

/// One JSON line per event, allocated once at about its final size. A line lives as long as
/// the live ring and the subscribers' chunks hold it; grown by doubling (as `to_vec` does), up
/// to half of each allocation would be held unused, and the bytes copied once per doubling.
pub fn ndjson_line(e: &eventfold_core::RecordedEvent) -> Bytes {
    // Data that is not JSON goes out as base64: 4 bytes for every 3.
    let data = if e.content_type.is_json() {
        e.data.len()
    } else {
        e.data.len().div_ceil(3) * 4
    };
    let estimate = LINE_FIXED_BYTES
        + e.stream.as_str().len()
        + e.event_type.as_str().len()
        + e.content_type.as_str().len()
        + data
        + e.metadata.json_len();
    let mut v = Vec::with_capacity(estimate);
    serde_json::to_writer(&mut v, e).expect("an event always serializes");
    v.push(b'\n');
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use eventfold_core::{
        ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName,
        Timestamp,
    };

    fn event(content_type: &str, data: Vec<u8>, metadata: Metadata) -> RecordedEvent {
        RecordedEvent {
            id: EventId::from_bytes([7; 16]),
            stream: "order-1".parse::<StreamName>().expect("stream name"),
            event_type: "placed".parse::<EventType>().expect("event type"),
            revision: Revision(u64::MAX - 1),
            position: Position(u64::MAX - 1),
            timestamp: Timestamp::now(),
            schema_version: u32::MAX,
            content_type: ContentType::new(content_type).expect("content type"),
            data,
            metadata,
        }
    }

    /// The sized line is the event's JSON and a line break, whatever the estimate was.
    #[test]
    fn a_line_is_the_events_json_and_a_line_break() {
        let mut md = Metadata::new();
        md.insert("correlation_id".into(), "c-1".into());
        for e in [
            event(
                "application/json",
                br#"{"a":[1,2,{"b":"\u00e9"}]}"#.to_vec(),
                md,
            ),
            event("application/json", b"{}".to_vec(), Metadata::new()),
            event(
                "application/octet-stream",
                vec![0xff; 1000],
                Metadata::new(),
            ),
            event("application/octet-stream", Vec::new(), Metadata::new()),
        ] {
            let mut want = serde_json::to_vec(&e).expect("json");
            want.push(b'\n');
            assert_eq!(super::ndjson_line(&e), want);
        }
    }
}
