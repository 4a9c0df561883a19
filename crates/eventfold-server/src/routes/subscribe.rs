//! Subscriptions over Server-Sent Events and NDJSON: history, then live events, heartbeats when
//! idle, resume with `Last-Event-ID`, and a final message when the server shuts down.
//!
//! A subscription reads its history with its own cursor over the store, pulled only as fast as
//! the socket drains, so a slow reader holds one page of events and one chunk in memory, never
//! a growing queue. Once the events after its last one are all in the live hub's ring
//! ([`crate::live`]), it takes them from there instead: one reader of the log and one encoding
//! per event for every live subscription. If it falls behind the ring it goes back to a store
//! cursor from exactly where it is; it is never dropped for being slow.
//!
//! Each wake-up's events go out as one chunk (all the events that are ready, up to
//! [`CHUNK_EVENTS_MAX`]), and each event's JSON is encoded once for every subscription.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eventfold_core::{
    EventFilter, EventStore, EventSubscription, Position, RecordedEvent, Revision, StoreError,
    StreamName, SubscribeFrom,
};
use eventfold_protocol::{
    ErrorCode, NDJSON, QueryPairs, SUBSCRIBE_ALL_PARAMS, SUBSCRIBE_STREAM_PARAMS, store_error_code,
    subscribe_all_query, subscribe_stream_query,
};
use futures::StreamExt as _;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::auth::{Right, Scope, StreamSet};
use crate::authorized::{ApiRequest, Authorized, PathParams};
use crate::encoded::EncodedEvents;
use crate::error::{ApiError, ApiResult};
use crate::live::{Hub, Interest, Lease, LiveEvent, Take, TakeLimits, Waiter};
use crate::metrics::Metrics;
use crate::negotiate::{EVENT_STREAM_CLOUDEVENTS, NDJSON_CLOUDEVENTS, Wants, negotiate};
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
    // A stream's revisions say nothing of positions: the store's subscription sends the
    // first event, and the subscription moves to the hub after it.
    let source = Source::Store(st.store.subscribe_stream(&stream, from));
    let feed = Feed::new(&st, Interest::Stream(stream), source);
    Ok(respond(&st, &headers, feed, IdKind::Revision))
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
    let mut feed = Feed::new(&st, Interest::All(filter.clone()), Source::Hub { next: 0 });
    // From a position the hub still holds, straight from the hub; otherwise (or from the end,
    // which only the store knows exactly) from the store.
    feed.source = match from {
        SubscribeFrom::Start if st.live.covers(0) => Source::Hub { next: 0 },
        SubscribeFrom::At(p) if st.live.covers(p.0) => Source::Hub { next: p.0 },
        _ => Source::Store(st.store.subscribe_all(from, filter)),
    };
    if matches!(feed.source, Source::Hub { .. }) {
        st.metrics.subscription_hub_joins.inc();
    }
    Ok(respond(&st, &headers, feed, IdKind::Position))
}

/// Events written in one chunk at most: a catch-up from far behind goes out in chunks of this
/// many, so a subscriber holds one page of the store's subscription plus one chunk, however far
/// behind it is.
pub const CHUNK_EVENTS_MAX: usize = 512;
/// Bytes of event data and metadata gathered into one chunk at most (the chunk itself is a
/// little larger: the JSON around them). A chunk closes at the first event that reaches it.
pub const CHUNK_DATA_BYTES_MAX: usize = 1 << 20;

const CHUNK: TakeLimits = TakeLimits {
    events: CHUNK_EVENTS_MAX,
    data_bytes: CHUNK_DATA_BYTES_MAX,
};

enum Item {
    /// The events that were ready at one wake-up, in order: written as one chunk.
    Events(Vec<Arc<LiveEvent>>),
    Failed(StoreError),
    Heartbeat,
    Closing,
}

/// Where a subscription's events come from now.
enum Source {
    /// Its own cursor over the store: the history, and whenever it is behind the live hub.
    Store(EventSubscription),
    /// The live hub's ring, from position `next` on (every wanted event below it was sent).
    Hub { next: u64 },
}

/// One subscription: its events from the store or the hub, merged with heartbeats and the
/// shutdown signal; each wake-up's events as one item; ends after a failure or the closing
/// message.
struct Feed {
    store: Arc<dyn EventStore>,
    hub: Hub,
    _lease: Lease,
    /// Woken by the hub's pushes that hold an event this subscription wants.
    waiter: Waiter,
    encoded: Arc<EncodedEvents>,
    metrics: Arc<Metrics>,
    interest: Interest,
    source: Source,
    /// The revision of the last event sent (a stream subscription resumes after it when it
    /// falls back to the store).
    last_revision: Option<u64>,
    closing: watch::Receiver<bool>,
    heartbeat: Duration,
    /// One timer for the subscription's life, moved on when it fires (not one per wait).
    beat: Pin<Box<Sleep>>,
    /// When something was last sent: a heartbeat goes out after `heartbeat` of silence.
    last_out: Instant,
    /// A failure met while gathering a chunk: sent after the chunk.
    failed: Option<StoreError>,
    /// The store's subscription ended (or a final item was sent).
    done: bool,
}

impl Feed {
    fn new(st: &AppState, interest: Interest, source: Source) -> Self {
        let now = Instant::now();
        Feed {
            store: st.store.clone(),
            hub: st.live.clone(),
            _lease: st.live.lease(&st.store, &st.encoded, &st.metrics),
            waiter: st.live.waiter(&interest),
            encoded: st.encoded.clone(),
            metrics: st.metrics.clone(),
            interest,
            source,
            last_revision: None,
            closing: st.closing.subscribe(),
            heartbeat: st.limits.heartbeat,
            beat: Box::pin(tokio::time::sleep_until(now + st.limits.heartbeat)),
            last_out: now,
            failed: None,
            done: false,
        }
    }

    /// The next item, or `None` at the end.
    async fn next_item(&mut self) -> Option<Item> {
        if let Some(e) = self.failed.take() {
            self.done = true;
            return Some(Item::Failed(e));
        }
        if self.done {
            return None;
        }
        let item = loop {
            if *self.closing.borrow_and_update() {
                break Item::Closing;
            }
            match &mut self.source {
                Source::Hub { next } => {
                    // A push during the take leaves a wake-up for the wait below.
                    let mut cursor = *next;
                    match self.hub.take(&mut cursor, &self.interest, CHUNK) {
                        Take::Behind => {
                            self.metrics.subscription_hub_fallbacks.inc();
                            self.fall_back(cursor);
                            continue;
                        }
                        Take::Events(events) => {
                            *next = cursor;
                            if let Some(last) = events.last() {
                                self.last_revision = Some(last.event.revision.0);
                                break Item::Events(events);
                            }
                        }
                    }
                    tokio::select! {
                        biased;
                        _ = self.closing.changed() => break Item::Closing,
                        () = self.waiter.woken() => {}
                        () = &mut self.beat => {
                            if self.beat_due() {
                                // A stream subscription checks its stream with the store now
                                // and then (a hard delete ends it; the hub sees no event).
                                if matches!(self.interest, Interest::Stream(_)) {
                                    self.fall_back(cursor);
                                }
                                break Item::Heartbeat;
                            }
                        }
                    }
                }
                Source::Store(sub) => {
                    tokio::select! {
                        biased;
                        _ = self.closing.changed() => break Item::Closing,
                        next = sub.next() => match next {
                            Some(Ok(e)) => break Item::Events(self.gather(e)),
                            Some(Err(e)) => break Item::Failed(e),
                            None => return None,
                        },
                        () = &mut self.beat => {
                            if self.beat_due() {
                                break Item::Heartbeat;
                            }
                        }
                    }
                }
            }
        };
        self.done |= matches!(item, Item::Closing | Item::Failed(_));
        if matches!(item, Item::Events(_)) {
            self.last_out = Instant::now();
        }
        Some(item)
    }

    /// Whether a heartbeat is due; moves the timer to the next time one may be.
    fn beat_due(&mut self) -> bool {
        let now = Instant::now();
        let due = self.last_out + self.heartbeat;
        if now >= due {
            self.last_out = now;
            self.beat.as_mut().reset(now + self.heartbeat);
            true
        } else {
            self.beat.as_mut().reset(due);
            false
        }
    }

    /// Reads from the store again, from `next` (the first position not yet sent or skipped).
    fn fall_back(&mut self, next: u64) {
        let sub = match &self.interest {
            Interest::All(filter) => self
                .store
                .subscribe_all(SubscribeFrom::At(Position(next)), filter.clone()),
            // A stream subscription reads from the hub only after it sent an event from the
            // store, so its last revision is known.
            Interest::Stream(stream) => self.store.subscribe_stream(
                stream,
                SubscribeFrom::At(Revision(self.last_revision.map_or(0, |r| r + 1))),
            ),
        };
        self.source = Source::Store(sub);
    }

    /// `first` and every event the store's subscription has ready now, without waiting, up to
    /// one chunk; then switches to the hub if the hub holds everything after the last one.
    fn gather(&mut self, first: RecordedEvent) -> Vec<Arc<LiveEvent>> {
        use futures::FutureExt as _;
        let Source::Store(sub) = &mut self.source else {
            return Vec::new();
        };
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut item = Some(first);
        while let Some(e) = item.take() {
            let line = self.encoded.line(&e);
            self.metrics
                .subscription_encodes
                .inc_by(u64::from(line.encoded));
            let live = Arc::new(LiveEvent {
                event: e,
                line: line.bytes,
            });
            bytes += live.data_bytes();
            batch.push(live);
            if batch.len() >= CHUNK_EVENTS_MAX || bytes >= CHUNK_DATA_BYTES_MAX {
                break;
            }
            match sub.next().now_or_never() {
                Some(Some(Ok(e))) => item = Some(e),
                Some(Some(Err(e))) => self.failed = Some(e),
                Some(None) => self.done = true,
                // Nothing more ready: the store's subscription keeps its wait for the next poll.
                None => {}
            }
        }
        if let Some(last) = batch.last() {
            let next = last.event.position.0 + 1;
            self.last_revision = Some(last.event.revision.0);
            if self.failed.is_none() && !self.done && self.hub.covers(next) {
                self.source = Source::Hub { next };
                self.metrics.subscription_hub_joins.inc();
            }
        }
        batch
    }
}

/// Writes a chunk's events: each event's JSON line is shared; only an SSE frame's `id:` and
/// `event:` lines are this subscription's own.
struct ChunkWriter {
    metrics: Arc<Metrics>,
    /// `None`: NDJSON; else SSE with these ids.
    sse: Option<IdKind>,
    /// Each event as a structured CloudEvent, encoded for this subscription alone (the shared
    /// line is eventfold's own JSON; CloudEvents subscribers are rare enough that a second
    /// ring is not worth its memory).
    cloudevents: bool,
}

impl ChunkWriter {
    fn events(&self, events: &[Arc<LiveEvent>]) -> Bytes {
        use std::io::Write as _;
        let n = events.len() as u64;
        let _span = crate::spans::receive(None, None, events.iter().map(|e| &e.event));
        self.metrics.events_read.inc_by(n);
        self.metrics.subscription_deliveries.inc_by(n);
        self.metrics.subscription_chunks.inc();
        if self.cloudevents {
            return self.cloudevents_chunk(events);
        }
        match (self.sse, events) {
            // One NDJSON event: the shared bytes themselves, no copy.
            (None, [e]) => e.line.clone(),
            (None, _) => {
                let mut buf = Vec::with_capacity(events.iter().map(|e| e.line.len()).sum());
                for e in events {
                    buf.extend_from_slice(&e.line);
                }
                Bytes::from(buf)
            }
            (Some(kind), _) => {
                let mut buf = Vec::with_capacity(events.iter().map(|e| e.line.len() + 64).sum());
                for e in events {
                    let id = match kind {
                        IdKind::Revision => e.event.revision.0,
                        IdKind::Position => e.event.position.0,
                    };
                    let _ = write!(buf, "id: {id}\nevent: ");
                    sse_safe(&mut buf, e.event.event_type.as_str());
                    buf.extend_from_slice(b"\ndata: ");
                    // The line ends with `\n`; one more ends the frame.
                    buf.extend_from_slice(&e.line);
                    buf.push(b'\n');
                }
                Bytes::from(buf)
            }
        }
    }
}

impl ChunkWriter {
    /// The chunk of a CloudEvents subscription: each event encoded here.
    fn cloudevents_chunk(&self, events: &[Arc<LiveEvent>]) -> Bytes {
        use std::io::Write as _;
        let mut buf = Vec::with_capacity(events.iter().map(|e| e.line.len() + 256).sum());
        for e in events {
            if let Some(kind) = self.sse {
                let _ = write!(buf, "id: {}\nevent: ", sse_id(kind, &e.event));
                sse_safe(&mut buf, e.event.event_type.as_str());
                buf.extend_from_slice(b"\ndata: ");
                eventfold_protocol::write_cloudevent_line(&mut buf, &e.event);
                buf.push(b'\n');
            } else {
                eventfold_protocol::write_cloudevent_line(&mut buf, &e.event);
            }
        }
        Bytes::from(buf)
    }
}

fn sse_id(kind: IdKind, e: &RecordedEvent) -> u64 {
    match kind {
        IdKind::Revision => e.revision.0,
        IdKind::Position => e.position.0,
    }
}

fn respond(st: &AppState, headers: &HeaderMap, feed: Feed, id_kind: IdKind) -> Response {
    let active = crate::metrics::ActiveSubscription::new(&st.metrics.subscriptions_active);
    let items =
        futures::stream::unfold(
            feed,
            |mut f| async move { f.next_item().await.map(|i| (i, f)) },
        )
        .inspect(move |_| {
            // The guard lives as long as the stream, so the gauge falls when the client goes.
            let _ = &active;
        });
    let asked = negotiate(headers, Wants::EventStream);
    let ndjson = asked.wants == Wants::Ndjson;
    let writer = ChunkWriter {
        metrics: st.metrics.clone(),
        sse: (!ndjson).then_some(id_kind),
        cloudevents: asked.cloudevents,
    };
    let (ndjson_type, sse_type) = if asked.cloudevents {
        (NDJSON_CLOUDEVENTS, EVENT_STREAM_CLOUDEVENTS)
    } else {
        (NDJSON, "text/event-stream")
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
            [(CONTENT_TYPE, ndjson_type), (CACHE_CONTROL, "no-cache")],
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
            [(CONTENT_TYPE, sse_type), (CACHE_CONTROL, "no-cache")],
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
