use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eventfold_core::{
    DeleteMode, ListStreams, ReadFrom, ReadStream, StreamMetadata, StreamName, TraceContext,
};
use eventfold_groups::GroupName;
use eventfold_protocol::{
    AppendResponse, CLOUDEVENTS_BATCH_JSON, CLOUDEVENTS_JSON, ErrorCode, InfoResponse, QueryPairs,
    READ_STREAM_PARAMS, StreamsResponse, TRACEPARENT_HEADER, TRACESTATE_HEADER, fill_trace_context,
    parse_append_condition, parse_cloudevent, parse_cloudevent_binary, parse_cloudevents_batch,
    parse_expected_revision, parse_new_events, parse_trace_headers, read_stream_query,
};
use eventfold_trace::{Attribute, Kind, semconv};

use super::encode::{NDJSON_PAGE_EVENTS, Page, Shape, cloudevents_page, json_page, paged_ndjson};
use super::read_body;
use crate::auth::{Right, Scope, StreamSet};
use crate::authorized::{Admin, ApiRequest, Authorized, OnStream, PathParams, Read, Write};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::negotiate::{Wants, negotiate};
use crate::state::AppState;

pub(crate) fn expected_revision(
    headers: &HeaderMap,
) -> ApiResult<eventfold_core::ExpectedRevision> {
    let v = match headers.get("expected-revision") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidExpectedRevision,
                "the Expected-Revision header is not text",
            )
        })?),
    };
    Ok(parse_expected_revision(v)?)
}

/// The header of a conditional append: an `eventfold_core::AppendCondition` in its JSON form.
pub(crate) const APPEND_CONDITION_HEADER: &str = "append-condition";

/// The request's `Append-Condition` header, parsed once (400 `invalid_append_condition` when
/// malformed); absent: an unconditional append.
pub(crate) fn append_condition(
    headers: &HeaderMap,
) -> ApiResult<Option<eventfold_core::AppendCondition>> {
    let Some(v) = headers.get(APPEND_CONDITION_HEADER) else {
        return Ok(None);
    };
    let text = v.to_str().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidAppendCondition,
            "the Append-Condition header is not text (send its JSON in ASCII, escaping other characters as \\uXXXX)",
        )
    })?;
    Ok(Some(parse_append_condition(text)?))
}

/// The request's W3C `traceparent`/`tracestate` headers, parsed once (400
/// `invalid_trace_context` naming the header when malformed).
pub(crate) fn trace_headers(headers: &HeaderMap) -> ApiResult<Option<TraceContext>> {
    Ok(parse_trace_headers(
        headers.get(TRACEPARENT_HEADER).map(|v| v.as_bytes()),
        headers.get(TRACESTATE_HEADER).map(|v| v.as_bytes()),
    )?)
}

/// The header that makes an append a binary-mode CloudEvent.
const CE_SPECVERSION_HEADER: &str = "ce-specversion";

/// `POST /streams/{stream}`.
pub async fn append(
    State(st): State<AppState>,
    req: Authorized<OnStream<Write>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let stream = req.into_inner().stream;
    let expected = expected_revision(&headers)?;
    let condition = append_condition(&headers)?;
    let trace = trace_headers(&headers)?;
    let body = read_body(
        &headers,
        body,
        st.limits.body_bytes_max(),
        st.limits.body_read_timeout,
    )
    .await?;
    let events = parse_append_request(&headers, &body)?;
    let r = append_counted(
        &st,
        &stream,
        expected,
        events,
        condition,
        trace.as_ref(),
        None,
    )
    .await?;
    let status = if r.idempotent_replay {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(append_response(&r))).into_response())
}

/// The events of `POST /streams/{stream}` from its headers and body: a binary-mode CloudEvent
/// when a `ce-specversion` header is there (attributes in `ce-*` headers, the data as the
/// body), else the body by its `Content-Type` ([`parse_append_body`]).
pub(crate) fn parse_append_request(
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Vec<eventfold_core::NewEvent>> {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if headers.contains_key(CE_SPECVERSION_HEADER) {
        Ok(parse_cloudevent_binary(
            headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
            content_type,
            body,
        )?)
    } else {
        parse_append_body(content_type, body)
    }
}

/// The events of an append body, parsed by its `Content-Type` (`None`, or a header that is not
/// text: JSON).
pub(crate) fn parse_append_body(
    content_type: Option<&str>,
    body: &[u8],
) -> ApiResult<Vec<eventfold_core::NewEvent>> {
    let essence = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Ok(match essence.as_str() {
        // curl's `-d` sends form-urlencoded; the body is JSON all the same.
        "application/json" | "" | "application/x-www-form-urlencoded" => parse_new_events(body)?,
        CLOUDEVENTS_JSON => parse_cloudevent(body)?,
        CLOUDEVENTS_BATCH_JSON => parse_cloudevents_batch(body)?,
        other => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "Content-Type {other} is not accepted; send application/json, {CLOUDEVENTS_JSON} or {CLOUDEVENTS_BATCH_JSON}"
                ),
            ));
        }
    })
}

/// Appends `events` to `stream` and counts them (appended or failed, by type) and the time
/// the store took: what every append route does with a parsed, authorized append.
///
/// Traces it: a `send` producer span (when tracing is on) whose parent is the request's
/// context `trace`, and every event without a context of its own stores the span's (or, when
/// tracing is off, `trace`, or a generated one), so every event appended over HTTP carries one.
/// Without `trace`, the span's parent is the first context the events carry.
///
/// `sequenced` is dropped once the append's place among the store's appends is fixed
/// ([`eventfold_core::EventStore::append_sequenced`]), before its outcome is known.
pub(super) async fn append_counted(
    st: &AppState,
    stream: &StreamName,
    expected: eventfold_core::ExpectedRevision,
    mut events: Vec<eventfold_core::NewEvent>,
    condition: Option<eventfold_core::AppendCondition>,
    trace: Option<&TraceContext>,
    sequenced: Option<tokio::sync::oneshot::Sender<()>>,
) -> ApiResult<eventfold_core::AppendResult> {
    // Without a traceparent header, the span continues the trace the events carry (a
    // framework's command span, say), looked for only when spans are made.
    let carried = match trace {
        None if eventfold_trace::enabled() => events
            .iter()
            .find_map(|e| eventfold_trace::event_context(&e.metadata)),
        _ => None,
    };
    let parent = trace.or(carried.as_ref());
    let span = eventfold_trace::Span::start("send", Kind::Producer, parent, [], || {
        vec![
            Attribute::new(semconv::MESSAGING_OPERATION_NAME, "send"),
            Attribute::new(semconv::MESSAGING_OPERATION_TYPE, "send"),
            Attribute::new(semconv::MESSAGING_DESTINATION_NAME, stream.to_string()),
            Attribute::new(semconv::MESSAGING_BATCH_MESSAGE_COUNT, events.len() as i64),
        ]
    });
    fill_trace_context(
        &mut events,
        &eventfold_trace::context_to_store(&span, trace),
        &st.limits.store,
    );
    let counts = st
        .metrics
        .type_counts(events.iter().map(|e| e.event_type.as_str()));
    let started = std::time::Instant::now();
    let pending = st
        .store
        .append_sequenced(stream, expected, events, condition)
        .await;
    // Its place among the store's appends is fixed: the next append of a pipeline may go.
    drop(sequenced);
    let result = pending.await;
    st.metrics
        .append_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(r) => {
            if r.idempotent_replay {
                st.metrics.idempotent_replays.inc();
            } else {
                Metrics::count_by_type(&st.metrics.events_appended, &counts);
            }
            span.set_attributes(|| {
                vec![
                    Attribute::new("eventfold.first_position", r.first_position.0 as i64),
                    Attribute::new("eventfold.idempotent_replay", r.idempotent_replay),
                ]
            });
            Ok(r)
        }
        Err(e) => {
            Metrics::count_by_type(&st.metrics.events_failed, &counts);
            let e: ApiError = e.into();
            span.fail(&e.0.body.error.code, &e.0.body.error.message);
            Err(e)
        }
    }
}

/// The contract's answer to an append.
pub(crate) fn append_response(r: &eventfold_core::AppendResult) -> AppendResponse {
    AppendResponse {
        stream: r.stream.to_string(),
        first_revision: r.first_revision.0,
        last_revision: r.last_revision.0,
        first_position: r.first_position.0,
        last_position: r.last_position.0,
    }
}

/// What `GET /streams/{stream}` reads: a user stream, or `$parked-{group}`, a consumer
/// group's parked events (read-only, from the groups' state store).
#[derive(Debug)]
pub enum StreamTarget {
    /// A user stream.
    Stream(StreamName),
    /// The parked events of a consumer group.
    Parked(GroupName),
}

/// `GET /streams/{stream}?from=&direction=&limit=`.
#[derive(Debug)]
pub struct ReadStreamRequest {
    target: StreamTarget,
    read: ReadStream,
    limit_given: bool,
}

impl ApiRequest for ReadStreamRequest {
    const PARAMS: &'static [&'static str] = READ_STREAM_PARAMS;
    fn parse(path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        let raw = path.get("stream")?;
        let target = match raw.strip_prefix(PARKED_STREAM_PREFIX) {
            Some(group) => StreamTarget::Parked(GroupName::new(group)?),
            None => StreamTarget::Stream(StreamName::new(raw)?),
        };
        Ok(ReadStreamRequest {
            target,
            read: read_stream_query(query)?,
            limit_given: query.contains("limit"),
        })
    }
    fn scope(&self) -> Scope {
        match &self.target {
            StreamTarget::Stream(s) => Scope::Stream(Right::Read, s.clone()),
            // Parked events are copies of events of any stream the group reads.
            StreamTarget::Parked(_) => Scope::every(Right::Read),
        }
    }
}

/// The name prefix under which `GET /streams/...` serves a group's parked events.
pub const PARKED_STREAM_PREFIX: &str = "$parked-";

/// `GET /streams/{stream}`.
pub async fn read(
    State(st): State<AppState>,
    req: Authorized<ReadStreamRequest>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let ReadStreamRequest {
        target,
        mut read,
        limit_given,
    } = req.into_inner();
    read.limit = super::default_limit(limit_given, read.limit, &st);
    let stream = match target {
        StreamTarget::Parked(group) => {
            super::check_read_limit(&st, read.limit)?;
            return super::groups::read_parked_stream(&st, &group, read).await;
        }
        StreamTarget::Stream(stream) => stream,
    };
    let asked = negotiate(&headers, Wants::Json);
    let shape = Shape::of(asked.cloudevents);
    if asked.wants == Wants::Ndjson {
        super::check_read_limit(&st, read.limit)?;
        // Read the first page up front so errors get a status, not a cut stream.
        let first = st
            .store
            .read_stream(
                &stream,
                ReadStream {
                    limit: read.limit.min(NDJSON_PAGE_EVENTS),
                    ..read
                },
            )
            .await?;
        return Ok(ndjson_stream_read(st, stream, read, first, shape));
    }
    let slice = st.store.read_stream(&stream, read).await?;
    st.metrics.events_read.inc_by(slice.events.len() as u64);
    let next = slice.next.map(|r| r.0);
    Ok(match asked.wants {
        Wants::CloudEventsBatch => cloudevents_page(&slice.events, next),
        _ => json_page(&slice.events, next),
    })
}

fn ndjson_stream_read(
    st: AppState,
    stream: StreamName,
    read: ReadStream,
    first: eventfold_core::StreamSlice,
    shape: Shape,
) -> Response {
    let store = st.store.clone();
    paged_ndjson(st, first.into(), read.limit, shape, move |r, limit| {
        let more = ReadStream {
            from: ReadFrom::At(r),
            limit,
            ..read
        };
        let (store, stream) = (store.clone(), stream.clone());
        async move { store.read_stream(&stream, more).await.map(Page::from) }
    })
}

/// `GET /streams/{stream}/info`.
pub async fn info(
    State(st): State<AppState>,
    req: Authorized<OnStream<Read>>,
) -> ApiResult<Response> {
    let stream = req.into_inner().stream;
    let i = st.store.stream_info(&stream).await?;
    Ok(axum::Json(InfoResponse {
        stream: i.stream.to_string(),
        last_revision: i.last_revision.0,
        last_position: i.last_position.0,
        event_count: i.event_count,
        metadata: i.metadata,
    })
    .into_response())
}

/// `GET /streams?prefix=&after=&limit=`.
#[derive(Debug)]
pub struct ListRequest(ListStreams);

impl ApiRequest for ListRequest {
    const PARAMS: &'static [&'static str] = LIST_PARAMS;
    fn parse(_path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        parse_listing(query, LIST_LIMIT_DEFAULT).map(ListRequest)
    }
    fn scope(&self) -> Scope {
        listing_scope(Right::Read, &self.0)
    }
}

/// The query parameters of a listing of streams (`GET /streams`, `GET /admin/streams`).
pub(crate) const LIST_PARAMS: &[&str] = &["prefix", "after", "limit"];

/// A listing's query (`prefix`, `after`, `limit` with a default), parsed once.
pub(crate) fn parse_listing(query: &QueryPairs, limit_default: u64) -> ApiResult<ListStreams> {
    query.check_known(LIST_PARAMS)?;
    let limit = query.get_u64("limit")?.unwrap_or(limit_default);
    Ok(ListStreams {
        prefix: query.get("prefix").map(str::to_owned),
        after: query.get("after").map(str::to_owned),
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
    })
}

/// What a listing needs: `right` on the streams its prefix names (every stream without one).
pub(crate) fn listing_scope(right: Right, list: &ListStreams) -> Scope {
    Scope::Streams(
        right,
        StreamSet {
            prefix: list.prefix.clone(),
            category: None,
        },
    )
}

/// Names per page of `GET /streams` when no `limit` is given.
const LIST_LIMIT_DEFAULT: u64 = 100;

/// `GET /streams?prefix=&after=&limit=`.
pub async fn list(State(st): State<AppState>, req: Authorized<ListRequest>) -> ApiResult<Response> {
    let page = st.store.list_streams(req.into_inner().0).await?;
    Ok(axum::Json(StreamsResponse {
        streams: page.streams.iter().map(ToString::to_string).collect(),
        next: page.next.map(|n| n.to_string()),
    })
    .into_response())
}

/// `GET /streams/{stream}/metadata`.
pub async fn get_metadata(
    State(st): State<AppState>,
    req: Authorized<OnStream<Read>>,
) -> ApiResult<Response> {
    let stream = req.into_inner().stream;
    Ok(axum::Json(st.store.get_metadata(&stream).await?).into_response())
}

/// `PUT /streams/{stream}/metadata`.
pub async fn put_metadata(
    State(st): State<AppState>,
    req: Authorized<OnStream<Admin>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let stream = req.into_inner().stream;
    let body = read_body(
        &headers,
        body,
        st.limits.body_bytes_max(),
        st.limits.body_read_timeout,
    )
    .await?;
    let md = parse_stream_metadata(&body)?;
    st.store.set_metadata(&stream, md.clone()).await?;
    Ok(axum::Json(md).into_response())
}

/// The body of `PUT /streams/{stream}/metadata`.
pub(crate) fn parse_stream_metadata(body: &[u8]) -> ApiResult<StreamMetadata> {
    super::from_json_object(body).map_err(|e| {
        ApiError::new(ErrorCode::InvalidMetadata,
            format!("the body is not stream metadata ({{\"max_count\"?, \"max_age_seconds\"?, \"truncate_before\"?, \"custom\"?}}): {e}"),
        )
    })
}

/// `DELETE /streams/{stream}[?hard=true]`.
#[derive(Debug)]
pub struct DeleteRequest {
    stream: StreamName,
    mode: DeleteMode,
}

impl ApiRequest for DeleteRequest {
    const PARAMS: &'static [&'static str] = &["hard"];
    fn parse(path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        query.check_known(Self::PARAMS)?;
        let mode = match query.get("hard") {
            None | Some("false") => DeleteMode::Soft,
            Some("true") => DeleteMode::Hard,
            Some(v) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("query parameter `hard={v}` must be `true` or `false`"),
                ));
            }
        };
        Ok(DeleteRequest {
            stream: path.stream()?,
            mode,
        })
    }
    fn scope(&self) -> Scope {
        Scope::Stream(Right::Admin, self.stream.clone())
    }
}

/// `DELETE /streams/{stream}[?hard=true]`.
pub async fn delete(
    State(st): State<AppState>,
    req: Authorized<DeleteRequest>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let DeleteRequest { stream, mode } = req.into_inner();
    let expected = expected_revision(&headers)?;
    st.store.delete_stream(&stream, expected, mode).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
