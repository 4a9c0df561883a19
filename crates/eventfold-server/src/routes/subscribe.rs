//! Subscriptions over Server-Sent Events and NDJSON: history, then live events, heartbeats when
//! idle, resume with `Last-Event-ID`, and a final message when the server shuts down. The
//! store's subscription is pulled only as fast as the socket drains, so a slow reader holds one
//! page of events and one chunk in memory, never a growing queue: it falls behind and catches
//! up by reading the store, and is never dropped for being slow.
//!
//! Each wake-up's events go out as one chunk (all the events the store's subscription has
//! ready, up to [`CHUNK_EVENTS_MAX`]), and each event's JSON is encoded once for every
//! subscription ([`crate::encoded::EncodedEvents`]).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eventfold_core::{
    EventFilter, EventSubscription, Position, Revision, StoreError, StreamName, SubscribeFrom,
};
use eventfold_protocol::{
    ErrorCode, NDJSON, QueryPairs, SUBSCRIBE_ALL_PARAMS, SUBSCRIBE_STREAM_PARAMS, store_error_code,
    subscribe_all_query, subscribe_stream_query,
};
use futures::StreamExt as _;
use tokio::sync::watch;

use crate::auth::{Right, Scope, StreamSet};
use crate::authorized::{ApiRequest, Authorized, PathParams};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::{Wants, wants};
use crate::state::AppState;

/// Which number identifies an event on this subscription: its revision (one stream) or its
/// position (`$all`).
#[derive(Clone, Copy)]
enum IdKind {
    Revision,
    Position,
}

fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidLastEventId, "the Last-Event-ID header must be an unsigned integer (a revision or position this server sent)")),
    }
}

/// `GET /streams/{stream}/subscribe?from=`.
#[derive(Debug)]
pub struct SubscribeStreamRequest {
    stream: StreamName,
    from: SubscribeFrom<Revision>,
}

impl ApiRequest for SubscribeStreamRequest {
    const PARAMS: &'static [&'static str] = SUBSCRIBE_STREAM_PARAMS;
    fn parse(path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        Ok(SubscribeStreamRequest {
            from: subscribe_stream_query(query)?,
            stream: path.stream()?,
        })
    }
    fn scope(&self) -> Scope {
        Scope::Stream(Right::Read, self.stream.clone())
    }
}

/// `GET /streams/{stream}/subscribe`.
pub async fn stream(
    State(st): State<AppState>,
    req: Authorized<SubscribeStreamRequest>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let SubscribeStreamRequest { stream, mut from } = req.into_inner();
    if let Some(id) = last_event_id(&headers)? {
        from = SubscribeFrom::At(Revision(id.saturating_add(1)));
    }
    let sub = st.store.subscribe_stream(&stream, from);
    Ok(respond(&st, &headers, sub, IdKind::Revision))
}

/// `GET /all/subscribe?from=&type=&category=&stream_prefix=`.
#[derive(Debug)]
pub struct SubscribeAllRequest {
    from: SubscribeFrom<Position>,
    filter: EventFilter,
}

impl ApiRequest for SubscribeAllRequest {
    const PARAMS: &'static [&'static str] = SUBSCRIBE_ALL_PARAMS;
    fn parse(_path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        let (from, filter) = subscribe_all_query(query)?;
        Ok(SubscribeAllRequest { from, filter })
    }
    fn scope(&self) -> Scope {
        Scope::Streams(Right::Read, StreamSet::of_filter(&self.filter))
    }
}

/// `GET /all/subscribe`.
pub async fn all(
    State(st): State<AppState>,
    req: Authorized<SubscribeAllRequest>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let SubscribeAllRequest { mut from, filter } = req.into_inner();
    if let Some(id) = last_event_id(&headers)? {
        from = SubscribeFrom::At(Position(id.saturating_add(1)));
    }
    let sub = st.store.subscribe_all(from, filter);
    Ok(respond(&st, &headers, sub, IdKind::Position))
}

/// Events written in one chunk at most: a catch-up from far behind goes out in chunks of this
/// many, so a subscriber holds one page of the store's subscription plus one chunk, however far
/// behind it is.
pub const CHUNK_EVENTS_MAX: usize = 512;
/// Bytes of event data and metadata gathered into one chunk at most (the chunk itself is a
/// little larger: the JSON around them). A chunk closes at the first event that reaches it.
pub const CHUNK_DATA_BYTES_MAX: usize = 1 << 20;

enum Item {
    /// The events that were ready at one wake-up, in order: written as one chunk.
    Events(Vec<eventfold_core::RecordedEvent>),
    Failed(StoreError),
    Heartbeat,
    Closing,
}

struct Live {
    sub: EventSubscription,
    closing: watch::Receiver<bool>,
    /// A failure met while gathering a chunk: sent after the chunk.
    failed: Option<StoreError>,
    /// The store's subscription ended (or a final item was sent).
    done: bool,
}

/// Adds to `batch` every event the subscription has ready now, without waiting, up to
/// [`CHUNK_EVENTS_MAX`] events and [`CHUNK_DATA_BYTES_MAX`] bytes. Order is kept: the events
/// come from the one subscription, one after another.
fn gather(live: &mut Live, batch: &mut Vec<eventfold_core::RecordedEvent>) {
    use futures::FutureExt as _;
    let size = |e: &eventfold_core::RecordedEvent| e.data.len() + e.metadata.json_len();
    let mut bytes: usize = batch.iter().map(size).sum();
    while batch.len() < CHUNK_EVENTS_MAX && bytes < CHUNK_DATA_BYTES_MAX {
        match live.sub.next().now_or_never() {
            Some(Some(Ok(e))) => {
                bytes += size(&e);
                batch.push(e);
            }
            Some(Some(Err(e))) => {
                live.failed = Some(e);
                return;
            }
            Some(None) => {
                live.done = true;
                return;
            }
            // Nothing more ready: the store's subscription keeps its wait for the next poll.
            None => return,
        }
    }
}

/// Merges the subscription with heartbeats and the shutdown signal: each wake-up's events as
/// one item; ends after a failure or the closing message.
fn items(
    sub: EventSubscription,
    heartbeat: Duration,
    closing: watch::Receiver<bool>,
) -> impl futures::Stream<Item = Item> + Send {
    let live = Live {
        sub,
        closing,
        failed: None,
        done: false,
    };
    futures::stream::unfold(live, move |mut live| async move {
        if let Some(e) = live.failed.take() {
            live.done = true;
            return Some((Item::Failed(e), live));
        }
        if live.done {
            return None;
        }
        if *live.closing.borrow_and_update() {
            live.done = true;
            return Some((Item::Closing, live));
        }
        let item = tokio::select! {
            biased;
            _ = live.closing.changed() => Item::Closing,
            next = live.sub.next() => match next {
                Some(Ok(e)) => {
                    let mut batch = vec![e];
                    gather(&mut live, &mut batch);
                    Item::Events(batch)
                }
                Some(Err(e)) => Item::Failed(e),
                None => return None,
            },
            () = tokio::time::sleep(heartbeat) => Item::Heartbeat,
        };
        live.done |= matches!(item, Item::Closing | Item::Failed(_));
        Some((item, live))
    })
}

/// Writes a chunk's events: each event's JSON line comes from the shared encodings; only an SSE
/// frame's `id:` and `event:` lines are this subscription's own.
struct ChunkWriter {
    encoded: std::sync::Arc<crate::encoded::EncodedEvents>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// `None`: NDJSON; else SSE with these ids.
    sse: Option<IdKind>,
}

impl ChunkWriter {
    fn events(&self, events: &[eventfold_core::RecordedEvent]) -> Bytes {
        use std::io::Write as _;
        let n = events.len() as u64;
        self.metrics.events_read.inc_by(n);
        self.metrics.subscription_deliveries.inc_by(n);
        self.metrics.subscription_chunks.inc();
        let mut encodes = 0u64;
        let mut line = |e: &eventfold_core::RecordedEvent| {
            let l = self.encoded.line(e);
            encodes += u64::from(l.encoded);
            l.bytes
        };
        let out = match (self.sse, events) {
            // One NDJSON event: the shared bytes themselves, no copy.
            (None, [e]) => line(e),
            (None, _) => {
                let mut buf = Vec::with_capacity(events.len() * 512);
                for e in events {
                    buf.extend_from_slice(&line(e));
                }
                Bytes::from(buf)
            }
            (Some(kind), _) => {
                let mut buf = Vec::with_capacity(events.len() * 576);
                for e in events {
                    let id = match kind {
                        IdKind::Revision => e.revision.0,
                        IdKind::Position => e.position.0,
                    };
                    let _ = write!(buf, "id: {id}\nevent: ");
                    sse_safe(&mut buf, e.event_type.as_str());
                    buf.extend_from_slice(b"\ndata: ");
                    // The line ends with `\n`; one more ends the frame.
                    buf.extend_from_slice(&line(e));
                    buf.push(b'\n');
                }
                Bytes::from(buf)
            }
        };
        self.metrics.subscription_encodes.inc_by(encodes);
        out
    }
}

fn respond(
    st: &AppState,
    headers: &HeaderMap,
    sub: EventSubscription,
    id_kind: IdKind,
) -> Response {
    let active = crate::metrics::ActiveSubscription::new(&st.metrics.subscriptions_active);
    let items = items(sub, st.limits.heartbeat, st.closing.subscribe()).inspect(move |_| {
        // The guard lives as long as the stream, so the gauge falls when the client goes.
        let _ = &active;
    });
    let ndjson = matches!(wants(headers, Wants::EventStream), Wants::Ndjson);
    let writer = ChunkWriter {
        encoded: st.encoded.clone(),
        metrics: st.metrics.clone(),
        sse: (!ndjson).then_some(id_kind),
    };
    if ndjson {
        let body = items.map(move |item| {
            Ok::<_, Infallible>(match item {
                Item::Events(events) => writer.events(&events),
                Item::Heartbeat => Bytes::from_static(b"\n"),
                Item::Failed(e) => final_line("error", store_error_code(&e).as_str(), &e.to_string()),
                Item::Closing => final_line("closing", ErrorCode::ServerShutdown.as_str(), "the server is shutting down; reconnect and resume from the last position you received"),
            })
        });
        (
            [(CONTENT_TYPE, NDJSON), (CACHE_CONTROL, "no-cache")],
            Body::from_stream(body),
        )
            .into_response()
    } else {
        let body = items.map(move |item| {
            Ok::<_, Infallible>(match item {
                Item::Events(events) => writer.events(&events),
                Item::Heartbeat => Bytes::from_static(b": heartbeat\n\n"),
                Item::Failed(e) => Bytes::from(format!(
                    "event: error\ndata: {}\n\n",
                    error_json(store_error_code(&e).as_str(), &e.to_string())
                )),
                Item::Closing => Bytes::from(format!(
                    "event: closing\ndata: {}\n\n",
                    error_json(
                        ErrorCode::ServerShutdown.as_str(),
                        "the server is shutting down; reconnect with Last-Event-ID to resume"
                    )
                )),
            })
        });
        (
            [
                (CONTENT_TYPE, "text/event-stream"),
                (CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(body),
        )
            .into_response()
    }
}

/// Event types may not hold line breaks (validated), but keep SSE framing safe regardless.
fn sse_safe(out: &mut Vec<u8>, s: &str) {
    out.extend(
        s.bytes()
            .map(|b| if matches!(b, b'\n' | b'\r') { b' ' } else { b }),
    );
}

fn error_json(code: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message}}).to_string()
}

fn final_line(kind: &str, code: &str, message: &str) -> Bytes {
    let mut v = serde_json::to_vec(&serde_json::json!({kind: {"code": code, "message": message}}))
        .expect("JSON always serializes");
    v.push(b'\n');
    Bytes::from(v)
}
