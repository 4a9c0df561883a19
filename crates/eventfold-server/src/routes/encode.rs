//! Events encoded for answers: one JSON page, or one NDJSON line per event. Shared by the
//! stream, `$all` and parked-event reads.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::state::AppState;

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

/// About how many bytes an event's line takes (at least as many in the usual case).
fn line_estimate(e: &eventfold_core::RecordedEvent) -> usize {
    // Data that is not JSON goes out as base64: 4 bytes for every 3.
    let data = if e.content_type.is_json() {
        e.data.len()
    } else {
        e.data.len().div_ceil(3) * 4
    };
    LINE_FIXED_BYTES
        + e.stream.as_str().len()
        + e.event_type.as_str().len()
        + e.content_type.as_str().len()
        + data
        // The stored text's length (an estimate: `json_len` would scan it).
        + e.metadata.raw_json().map_or(METADATA_GUESS_BYTES, str::len)
        // `,"tags":[…]`: each tag quoted, with a comma.
        + e.tags.iter().map(|t| t.as_str().len() + 3).sum::<usize>()
        + if e.tags.is_empty() { 0 } else { 10 }
}

/// Metadata bytes guessed for metadata that is not stored text (set by the caller).
const METADATA_GUESS_BYTES: usize = 64;

/// Appends the event's JSON and a line break to `out`.
fn write_line(out: &mut Vec<u8>, e: &eventfold_core::RecordedEvent) {
    e.write_json(out);
    out.push(b'\n');
}

/// One JSON line per event, allocated once at about its final size. A line lives as long as
/// the live ring and the subscribers' chunks hold it; grown by doubling (as `to_vec` does), up
/// to half of each allocation would be held unused, and the bytes copied once per doubling.
pub fn ndjson_line(e: &eventfold_core::RecordedEvent) -> Bytes {
    let mut v = Vec::with_capacity(line_estimate(e));
    write_line(&mut v, e);
    Bytes::from(v)
}

/// The lines of a page of events, one after the other in one buffer sized for them all up
/// front: a read answer's chunk, written without a buffer (or a copy) per event.
pub fn ndjson_lines(events: &[eventfold_core::RecordedEvent]) -> Bytes {
    let mut v = Vec::with_capacity(events.iter().map(line_estimate).sum());
    for e in events {
        write_line(&mut v, e);
    }
    Bytes::from(v)
}

/// Events per store read while streaming NDJSON: the answer is built page by page.
pub const NDJSON_PAGE_EVENTS: usize = 500;

/// Pages an NDJSON read queues, encoded or being encoded, ahead of the socket. Each is encoded
/// by a task of its own, so one reader's pages are encoded on every runtime thread while the
/// next page is read and the connection writes the previous one; a reader holds at most this
/// many pages queued, one more encoded while the queue is full, and one being written.
const NDJSON_PAGES_AHEAD: usize = 2;

/// A page of a paged read: its events, and where the next page starts (`None`: the end).
pub struct Page<P> {
    pub events: Vec<eventfold_core::RecordedEvent>,
    pub next: Option<P>,
}

impl From<eventfold_core::AllSlice> for Page<eventfold_core::Position> {
    fn from(s: eventfold_core::AllSlice) -> Self {
        Page {
            events: s.events,
            next: s.next,
        }
    }
}

impl From<eventfold_core::StreamSlice> for Page<eventfold_core::Revision> {
    fn from(s: eventfold_core::StreamSlice) -> Self {
        Page {
            events: s.events,
            next: s.next,
        }
    }
}

/// An NDJSON answer of up to `total` events, starting with `first` (read before the answer,
/// so that its errors get a status) and going on with `fetch(next, limit)` page by page. A
/// read that fails after the first page cuts the answer off with an error (the connection is
/// closed without the chunked body's end), so that a client cannot take a cut answer for a
/// whole one.
pub fn paged_ndjson<P, F, Fut>(
    st: AppState,
    first: Page<P>,
    total: usize,
    shape: Shape,
    mut fetch: F,
) -> Response
where
    P: Send + 'static,
    F: FnMut(P, usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = eventfold_core::StoreResult<Page<P>>> + Send,
{
    type Encoded = tokio::task::JoinHandle<std::io::Result<Bytes>>;
    let (tx, rx) = tokio::sync::mpsc::channel::<Encoded>(NDJSON_PAGES_AHEAD);
    tokio::spawn(async move {
        let mut sent = 0usize;
        let mut page = first;
        loop {
            let mut events = page.events;
            events.truncate(total - sent);
            sent += events.len();
            st.metrics.events_read.inc_by(events.len() as u64);
            let encoded = tokio::spawn(async move { Ok(shape.lines(&events)) });
            if tx.send(encoded).await.is_err() {
                return; // The client went away.
            }
            let Some(p) = page.next.filter(|_| sent < total) else {
                return;
            };
            match fetch(p, (total - sent).min(NDJSON_PAGE_EVENTS)).await {
                Ok(p) => page = p,
                Err(e) => {
                    tracing::warn!(error = %e, "NDJSON read cut off");
                    let e = std::io::Error::other(format!("read cut off: {e}"));
                    let _ = tx.send(tokio::spawn(async move { Err(e) })).await;
                    return;
                }
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        let encoded = match rx.recv().await?.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(format!("encoding failed: {e}"))),
        };
        Some((encoded, rx))
    });
    (
        [(CONTENT_TYPE, shape.ndjson_media_type())],
        Body::from_stream(body),
    )
        .into_response()
}

/// How a read answer writes each event: eventfold's own JSON, or a structured CloudEvent
/// (`eventfold_protocol::CloudEventOut`, the one mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Native,
    CloudEvents,
}

impl Shape {
    pub fn of(cloudevents: bool) -> Shape {
        if cloudevents {
            Shape::CloudEvents
        } else {
            Shape::Native
        }
    }

    /// The `Content-Type` of an NDJSON answer of this shape.
    pub fn ndjson_media_type(self) -> &'static str {
        match self {
            Shape::Native => eventfold_protocol::NDJSON,
            Shape::CloudEvents => crate::negotiate::NDJSON_CLOUDEVENTS,
        }
    }

    /// The lines of a page of events in this shape.
    pub fn lines(self, events: &[eventfold_core::RecordedEvent]) -> Bytes {
        match self {
            Shape::Native => ndjson_lines(events),
            Shape::CloudEvents => cloudevent_lines(events),
        }
    }
}

/// One structured CloudEvent per line (sized like [`ndjson_lines`]: about the same bytes).
pub fn cloudevent_lines(events: &[eventfold_core::RecordedEvent]) -> Bytes {
    let mut v = Vec::with_capacity(events.iter().map(line_estimate).sum());
    for e in events {
        eventfold_protocol::write_cloudevent_line(&mut v, e);
    }
    Bytes::from(v)
}

/// A page as a CloudEvents batch; the next page's start, when there is one, in the
/// `Eventfold-Next` header (a batch is a bare array, with no room for it).
pub fn cloudevents_page(events: &[eventfold_core::RecordedEvent], next: Option<u64>) -> Response {
    use axum::http::header::CONTENT_TYPE;
    let body = eventfold_protocol::cloudevents_batch(events);
    let mut r = (
        [(CONTENT_TYPE, eventfold_protocol::CLOUDEVENTS_BATCH_JSON)],
        body,
    )
        .into_response();
    if let Some(n) = next {
        r.headers_mut()
            .insert(NEXT_HEADER, axum::http::HeaderValue::from(n));
    }
    r
}

pub use eventfold_protocol::CLOUDEVENTS_NEXT_HEADER as NEXT_HEADER;

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
            tags: eventfold_core::Tags::none(),
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

    /// A page's chunk is its events' lines, in order, and nothing else.
    #[test]
    fn a_page_is_its_lines_in_order() {
        let events: Vec<_> = (0..5u8)
            .map(|i| {
                let mut e = event(
                    "application/json",
                    format!("{{\"i\":{i}}}").into_bytes(),
                    Metadata::new(),
                );
                e.position = Position(u64::from(i));
                e
            })
            .chain([event("text/plain", b"not json".to_vec(), Metadata::new())])
            .collect();
        let want: Vec<u8> = events
            .iter()
            .flat_map(|e| super::ndjson_line(e).to_vec())
            .collect();
        assert_eq!(super::ndjson_lines(&events), want);
        assert_eq!(super::ndjson_lines(&[]), Vec::<u8>::new());
    }
}
