//! Consumer groups (`/subscriptions`): the contract's persistent subscriptions over
//! [`eventfold_groups::Groups`]. Pull is a long-poll; the push stream is SSE or NDJSON, taken
//! from the group only as fast as the socket drains.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eventfold_groups::{AckOutcome, ConsumerName, Delivery, GroupName, Groups, PutOutcome};
use eventfold_protocol::groups::{
    AckRequest, GroupListBody, GroupSettings, NackRequest, PullRequest, PullResponse,
    ReplayRequest, ReplayResponse, SettleResponse,
};

use super::group_bodies::{
    config_from_wire, delivery_to_wire, info_to_wire, nack_action, parked_to_wire,
};
use serde::de::DeserializeOwned;
use serde_json::json;

use eventfold_protocol::{ErrorCode, QueryPairs};

use super::read_body;
use crate::auth::{Right, Scope};
use crate::authorized::{Admin, ApiRequest, Authorized, OnGroup, OnServer, PathParams, Read};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::{Wants, wants};
use crate::state::AppState;

/// Largest body of a group request (an ack of 10,000 ids fits easily).
const GROUP_BODY_BYTES_MAX: usize = 4 << 20;
/// Deliveries taken per step of a push stream.
const PUSH_BATCH: usize = 100;
/// The contract's defaults for a pull.
const PULL_MAX_DEFAULT: usize = 100;
const PULL_WAIT_MS_DEFAULT: u64 = 5000;
const PARKED_LIMIT_DEFAULT: usize = 100;

fn groups(st: &AppState) -> ApiResult<&Groups> {
    st.groups.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::GroupsUnavailable,
            "this server runs without consumer groups",
        )
    })
}

/// The JSON body; an empty body is `{}`.
async fn json_body<T: DeserializeOwned>(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<T> {
    let bytes = read_body(
        headers,
        body,
        GROUP_BODY_BYTES_MAX,
        st.limits.body_read_timeout,
    )
    .await?;
    parse_json_body(&bytes)
}

/// A group request's JSON body; an empty (or blank) body is `{}`.
pub(crate) fn parse_json_body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    super::from_json_object(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!("the request body is not the expected JSON: {e}"),
        )
    })
}

/// `PUT /subscriptions/{group}`: 201 created, 200 updated, with the group's info.
pub async fn put(
    State(st): State<AppState>,
    req: Authorized<OnGroup<Admin>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let g = groups(&st)?;
    let name = req.into_inner().group;
    let settings: GroupSettings = json_body(&st, &headers, body).await?;
    let config = config_from_wire(settings)?;
    let outcome = g.put(&name, config).await?;
    let info = g.info(&name).await?;
    let status = match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Updated => StatusCode::OK,
    };
    Ok((status, Json(info_to_wire(info))).into_response())
}

/// `GET /subscriptions`.
pub async fn list(State(st): State<AppState>, _req: Authorized<OnServer>) -> ApiResult<Response> {
    let infos = groups(&st)?.list().await?;
    Ok(Json(GroupListBody {
        subscriptions: infos.into_iter().map(info_to_wire).collect(),
    })
    .into_response())
}

/// `GET /subscriptions/{group}`.
pub async fn info(
    State(st): State<AppState>,
    req: Authorized<OnGroup<Read>>,
) -> ApiResult<Response> {
    let name = req.into_inner().group;
    Ok(Json(info_to_wire(groups(&st)?.info(&name).await?)).into_response())
}

/// `DELETE /subscriptions/{group}`: 204.
pub async fn delete(
    State(st): State<AppState>,
    req: Authorized<OnGroup<Admin>>,
) -> ApiResult<Response> {
    let name = req.into_inner().group;
    groups(&st)?.delete(&name).await?;
    st.metrics.forget_group(name.as_str());
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /subscriptions/{group}/pull`.
pub async fn pull(
    State(st): State<AppState>,
    req: Authorized<OnGroup<Read>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let g = groups(&st)?;
    let name = req.into_inner().group;
    let b: PullRequest = json_body(&st, &headers, body).await?;
    let consumer = ConsumerName::new(&b.consumer)?;
    let max = b.max.unwrap_or(PULL_MAX_DEFAULT);
    let wait = Duration::from_millis(b.wait_ms.unwrap_or(PULL_WAIT_MS_DEFAULT));
    let mut closing = st.closing.subscribe();
    // A shutdown ends the long-poll early (with nothing taken).
    let deliveries = if *closing.borrow_and_update() {
        g.pull(&name, &consumer, max, Duration::ZERO).await?
    } else {
        tokio::select! {
            r = g.pull(&name, &consumer, max, wait) => r?,
            _ = closing.changed() => Vec::new(),
        }
    };
    let deliveries = reveal(&st, deliveries).await?;
    st.metrics.events_read.inc_by(deliveries.len() as u64);
    let _span = crate::spans::receive(
        Some(name.as_str()),
        Some(consumer.as_str()),
        deliveries.iter().map(|d| &*d.event),
    );
    Ok(Json(PullResponse {
        deliveries: deliveries.iter().map(delivery_to_wire).collect(),
    })
    .into_response())
}

/// `POST /subscriptions/{group}/ack`: 200 once durable.
pub async fn ack(
    State(st): State<AppState>,
    req: Authorized<OnGroup<Read>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let g = groups(&st)?;
    let name = req.into_inner().group;
    let b: AckRequest = json_body(&st, &headers, body).await?;
    let span = settle_span(g, &name, "ack", &b.delivery_ids).await;
    let out = g.ack(&name, &b.delivery_ids).await;
    if let Err(e) = &out {
        span.fail("ack_failed", e);
    }
    Ok(Json(settled(out?)).into_response())
}

/// `POST /subscriptions/{group}/nack`.
pub async fn nack(
    State(st): State<AppState>,
    req: Authorized<OnGroup<Read>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let g = groups(&st)?;
    let name = req.into_inner().group;
    let b: NackRequest = json_body(&st, &headers, body).await?;
    let reason = if b.reason.is_empty() {
        "nacked without a reason"
    } else {
        &b.reason
    };
    // `events_failed` counts the nacked events by type: `Metrics::delivery_ended` is told.
    let span = settle_span(g, &name, "nack", &b.delivery_ids).await;
    let out = g
        .nack(&name, &b.delivery_ids, nack_action(b.action), reason)
        .await;
    if let Err(e) = &out {
        span.fail("nack_failed", e);
    }
    let out = out?;
    Ok(Json(settled(out)).into_response())
}

/// The span of an ack or nack of `ids`, related to the contexts the delivered events store
/// (looked up only when tracing is on).
async fn settle_span(
    g: &Groups,
    name: &GroupName,
    operation: &'static str,
    ids: &[String],
) -> eventfold_trace::Span {
    if !eventfold_trace::enabled() {
        return eventfold_trace::Span::none();
    }
    // An error here (unknown group, bad ids) is the ack's own to answer.
    let events = g.delivered_events(name, ids).await.unwrap_or_default();
    crate::spans::settle(name.as_str(), operation, ids.len(), &events)
}

fn settled(out: AckOutcome) -> SettleResponse {
    SettleResponse {
        acked: out.acked,
        unknown: out.unknown,
    }
}

/// `GET /subscriptions/{group}/parked?limit=&from=`.
#[derive(Debug)]
pub struct ParkedRequest {
    group: GroupName,
    from: Option<u64>,
    limit: usize,
}

impl ApiRequest for ParkedRequest {
    const PARAMS: &'static [&'static str] = &["limit", "from"];
    fn parse(path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        query.check_known(Self::PARAMS)?;
        Ok(ParkedRequest {
            group: path.group()?,
            from: query.get_u64("from")?,
            limit: query.get_u64("limit")?.map_or(PARKED_LIMIT_DEFAULT, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
        })
    }
    fn scope(&self) -> Scope {
        Scope::every(Right::Read)
    }
}

/// `GET /subscriptions/{group}/parked?limit=&from=`.
pub async fn parked(
    State(st): State<AppState>,
    req: Authorized<ParkedRequest>,
) -> ApiResult<Response> {
    let g = groups(&st)?;
    let ParkedRequest { group, from, limit } = req.into_inner();
    Ok(Json(parked_to_wire(g.parked(&group, from, limit).await?)).into_response())
}

/// `POST /subscriptions/{group}/parked/replay` → `{"replayed": n}`.
pub async fn replay(
    State(st): State<AppState>,
    req: Authorized<OnGroup<Admin>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let g = groups(&st)?;
    let name = req.into_inner().group;
    let b: ReplayRequest = json_body(&st, &headers, body).await?;
    let replayed = g.replay(&name, b.max).await?;
    Ok(Json(ReplayResponse {
        replayed: replayed as u64,
    })
    .into_response())
}

/// Opens (or redacts) the events of `deliveries` when the server crypto-shreds: the groups
/// read the store underneath (sealed data), so what their read-ahead holds is never
/// plaintext, and a delivery after a subject's key was deleted is redacted like every read.
async fn reveal(st: &AppState, deliveries: Vec<Delivery>) -> ApiResult<Vec<Delivery>> {
    let Some(keys) = &st.subject_keys else {
        return Ok(deliveries);
    };
    let mut out = Vec::with_capacity(deliveries.len());
    for mut d in deliveries {
        if d.event.content_type.as_str() == eventfold_shred::SEALED_CONTENT_TYPE {
            d.event =
                std::sync::Arc::new(eventfold_shred::reveal(&**keys, (*d.event).clone()).await?);
        }
        out.push(d);
    }
    Ok(out)
}

enum Item {
    Delivery(Delivery),
    Heartbeat,
    Closing,
    /// A delivery's event could not be opened (its sealed data is damaged): the stream ends
    /// with this error.
    Failed(ApiError),
}

/// `GET /subscriptions/{group}/stream?consumer=name`.
#[derive(Debug)]
pub struct PushRequest {
    group: GroupName,
    consumer: ConsumerName,
}

impl ApiRequest for PushRequest {
    const PARAMS: &'static [&'static str] = &["consumer"];
    fn parse(path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        query.check_known(Self::PARAMS)?;
        let consumer = query.get("consumer").ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                "give the consumer's name: ?consumer=name",
            )
        })?;
        Ok(PushRequest {
            group: path.group()?,
            consumer: ConsumerName::new(consumer)?,
        })
    }
    fn scope(&self) -> Scope {
        Scope::every(Right::Read)
    }
}

/// `GET /subscriptions/{group}/stream?consumer=name`: deliveries pushed as SSE (default) or
/// NDJSON; heartbeats when idle; a final message at shutdown.
pub async fn stream(
    State(st): State<AppState>,
    req: Authorized<PushRequest>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let g = groups(&st)?;
    let PushRequest {
        group: name,
        consumer,
    } = req.into_inner();
    let push = g.push(&name, &consumer).await?;
    let heartbeat = st.limits.heartbeat;
    let active = crate::metrics::ActiveSubscription::new(&st.metrics.subscriptions_active);
    let metrics = st.metrics.clone();
    let closing = st.closing.subscribe();
    let reveal_st = st.clone();
    let items = futures::stream::unfold(
        (push, closing, std::collections::VecDeque::new(), false),
        move |(push, mut closing, mut queue, done)| {
            let st = reveal_st.clone();
            async move {
                if done {
                    return None;
                }
                if let Some(d) = queue.pop_front() {
                    return Some((Item::Delivery(d), (push, closing, queue, false)));
                }
                if *closing.borrow_and_update() {
                    return Some((Item::Closing, (push, closing, queue, true)));
                }
                let got = tokio::select! {
                    biased;
                    _ = closing.changed() => return Some((Item::Closing, (push, closing, queue, true))),
                    got = push.next(PUSH_BATCH, heartbeat) => got,
                };
                match reveal(&st, got).await {
                    Ok(got) => queue.extend(got),
                    Err(e) => return Some((Item::Failed(e), (push, closing, queue, true))),
                }
                match queue.pop_front() {
                    Some(d) => Some((Item::Delivery(d), (push, closing, queue, false))),
                    None => Some((Item::Heartbeat, (push, closing, queue, false))),
                }
            }
        },
    );
    let ndjson = wants(&headers, Wants::EventStream) == Wants::Ndjson;
    let (push_group, push_consumer) = (name.clone(), consumer.clone());
    let body = futures::StreamExt::map(items, move |item| {
        let _ = &active;
        Ok::<_, Infallible>(match item {
            Item::Delivery(d) => {
                metrics.events_read.inc();
                let _span = crate::spans::receive(
                    Some(push_group.as_str()),
                    Some(push_consumer.as_str()),
                    std::iter::once(&*d.event),
                );
                let data = serde_json::to_string(&delivery_to_wire(&d))
                    .expect("a delivery always serializes");
                if ndjson {
                    Bytes::from(data + "\n")
                } else {
                    Bytes::from(format!(
                        "id: {}\nevent: delivery\ndata: {data}\n\n",
                        d.delivery_id
                    ))
                }
            }
            Item::Failed(e) => {
                let msg = json!({"code": e.0.body.error.code, "message": e.0.body.error.message});
                if ndjson {
                    Bytes::from(json!({ "error": msg }).to_string() + "\n")
                } else {
                    Bytes::from(format!(
                        "event: error\ndata: {}\n\n",
                        json!({ "error": msg })
                    ))
                }
            }
            Item::Heartbeat if ndjson => Bytes::from_static(b"\n"),
            Item::Heartbeat => Bytes::from_static(b": heartbeat\n\n"),
            Item::Closing => {
                let msg = json!({"code": ErrorCode::ServerShutdown.as_str(), "message": "the server is shutting down; unacknowledged deliveries will be delivered again; reconnect"});
                if ndjson {
                    Bytes::from(json!({ "closing": msg }).to_string() + "\n")
                } else {
                    Bytes::from(format!(
                        "event: closing\ndata: {}\n\n",
                        json!({ "error": msg })
                    ))
                }
            }
        })
    });
    let content_type = if ndjson {
        eventfold_protocol::NDJSON
    } else {
        "text/event-stream"
    };
    Ok((
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        Body::from_stream(body),
    )
        .into_response())
}

/// `GET /streams/$parked-{group}`: the group's parked stream, read-only, from the state store.
pub async fn read_parked_stream(
    st: &AppState,
    name: &GroupName,
    read: eventfold_core::ReadStream,
) -> ApiResult<Response> {
    let g = groups(st)?;
    let stream = g.parked_stream(name).await?;
    match g.state_store().read_stream(&stream, read).await {
        Ok(slice) => Ok(super::encode::json_page(
            &slice.events,
            slice.next.map(|r| r.0),
        )),
        // A group with nothing parked yet has an empty parked stream.
        Err(eventfold_core::StoreError::StreamNotFound { .. }) => {
            Ok(super::encode::json_page(&[], None))
        }
        Err(e) => Err(e.into()),
    }
}

/// Updates the per-group metric families from the groups' figures (called before a scrape).
pub async fn observe(st: &AppState) {
    let Some(g) = &st.groups else {
        return;
    };
    let Ok(infos) = g.list().await else {
        return;
    };
    for i in infos {
        st.metrics.observe_group(
            &i.group,
            crate::metrics::GroupFigures {
                lag: i.lag,
                in_flight: i.in_flight as u64,
                delivered_total: i.delivered_total,
                acked_total: i.acked_total,
                retried_total: i.retried_total,
                parked_total: i.parked_total,
                parked: i.parked,
            },
        );
    }
}
