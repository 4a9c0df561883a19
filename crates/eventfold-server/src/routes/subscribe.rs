//! Subscriptions over Server-Sent Events and NDJSON: history, then live events, heartbeats when
//! idle, resume with `Last-Event-ID`, and a final message when the server shuts down. The
//! store's subscription is pulled only as fast as the socket drains, so a slow reader holds one
//! page of events in memory, never a growing queue.

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

enum Item {
    Event(eventfold_core::RecordedEvent),
    Failed(StoreError),
    Heartbeat,
    Closing,
}

/// Merges the subscription with heartbeats and the shutdown signal; ends after a failure or the
/// closing message.
fn items(
    sub: EventSubscription,
    heartbeat: Duration,
    closing: watch::Receiver<bool>,
) -> impl futures::Stream<Item = Item> + Send {
    futures::stream::unfold(
        (sub, closing, false),
        move |(mut sub, mut closing, done)| async move {
            if done {
                return None;
            }
            if *closing.borrow_and_update() {
                return Some((Item::Closing, (sub, closing, true)));
            }
            let item = tokio::select! {
                biased;
                _ = closing.changed() => Item::Closing,
                next = sub.next() => match next {
                    Some(Ok(e)) => Item::Event(e),
                    Some(Err(e)) => Item::Failed(e),
                    None => return None,
                },
                () = tokio::time::sleep(heartbeat) => Item::Heartbeat,
            };
            let done = matches!(item, Item::Closing | Item::Failed(_));
            Some((item, (sub, closing, done)))
        },
    )
}

fn respond(
    st: &AppState,
    headers: &HeaderMap,
    sub: EventSubscription,
    id_kind: IdKind,
) -> Response {
    let active = crate::metrics::ActiveSubscription::new(&st.metrics.subscriptions_active);
    let metrics = st.metrics.clone();
    let items = items(sub, st.limits.heartbeat, st.closing.subscribe()).inspect(move |item| {
        // The guard lives as long as the stream, so the gauge falls when the client goes.
        let _ = &active;
        if matches!(item, Item::Event(_)) {
            metrics.events_read.inc();
        }
    });
    match wants(headers, Wants::EventStream) {
        Wants::Ndjson => {
            let body = items.map(|item| {
                Ok::<_, Infallible>(match item {
                    Item::Event(e) => super::encode::ndjson_line(&e),
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
        }
        _ => {
            let body = items.map(move |item| {
                Ok::<_, Infallible>(Bytes::from(match item {
                    Item::Event(e) => {
                        let id = match id_kind {
                            IdKind::Revision => e.revision.0,
                            IdKind::Position => e.position.0,
                        };
                        let data = serde_json::to_string(&e).expect("an event always serializes");
                        format!(
                            "id: {id}\nevent: {}\ndata: {data}\n\n",
                            sse_safe(e.event_type.as_str())
                        )
                    }
                    Item::Heartbeat => ": heartbeat\n\n".to_owned(),
                    Item::Failed(e) => format!(
                        "event: error\ndata: {}\n\n",
                        error_json(store_error_code(&e).as_str(), &e.to_string())
                    ),
                    Item::Closing => format!(
                        "event: closing\ndata: {}\n\n",
                        error_json(
                            ErrorCode::ServerShutdown.as_str(),
                            "the server is shutting down; reconnect with Last-Event-ID to resume"
                        )
                    ),
                }))
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
}

/// Event types may not hold line breaks (validated), but keep SSE framing safe regardless.
fn sse_safe(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
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
