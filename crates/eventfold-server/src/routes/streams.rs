use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eventfold_core::{DeleteMode, ListStreams, ReadFrom, ReadStream, StreamMetadata, StreamName};
use eventfold_protocol::{
    AppendResponse, CLOUDEVENTS_BATCH_JSON, CLOUDEVENTS_JSON, InfoResponse, NDJSON,
    StreamsResponse, parse_cloudevent, parse_cloudevents_batch, parse_expected_revision,
    parse_new_events, read_stream_query,
};

use super::{query_pairs, read_body, stream_from_path};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::{Wants, wants};
use crate::state::AppState;

fn expected_revision(headers: &HeaderMap) -> ApiResult<eventfold_core::ExpectedRevision> {
    let v = match headers.get("expected-revision") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::new(
                400,
                "invalid_expected_revision",
                "the Expected-Revision header is not text",
            )
        })?),
    };
    Ok(parse_expected_revision(v)?)
}

/// `POST /streams/{stream}`.
pub async fn append(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let stream = stream_from_path(path)?;
    let expected = expected_revision(&headers)?;
    let body = read_body(&headers, body, st.limits.body_bytes_max()).await?;
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let events = match essence.as_str() {
        // curl's `-d` sends form-urlencoded; the body is JSON all the same.
        "application/json" | "" | "application/x-www-form-urlencoded" => parse_new_events(&body)?,
        CLOUDEVENTS_JSON => parse_cloudevent(&body)?,
        CLOUDEVENTS_BATCH_JSON => parse_cloudevents_batch(&body)?,
        other => {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                format!(
                    "Content-Type {other} is not accepted; send application/json, {CLOUDEVENTS_JSON} or {CLOUDEVENTS_BATCH_JSON}"
                ),
            ));
        }
    };
    let count = events.len() as u64;
    let started = std::time::Instant::now();
    let result = st.store.append(&stream, expected, events).await;
    st.metrics
        .append_duration
        .observe(started.elapsed().as_secs_f64());
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            st.metrics.events_failed.inc_by(count);
            return Err(e.into());
        }
    };
    if !r.idempotent_replay {
        st.metrics.events_appended.inc_by(count);
    }
    let status = if r.idempotent_replay {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        axum::Json(AppendResponse {
            stream: r.stream.to_string(),
            first_revision: r.first_revision.0,
            last_revision: r.last_revision.0,
            first_position: r.first_position.0,
            last_position: r.last_position.0,
        }),
    )
        .into_response())
}

/// Events per store read while streaming NDJSON: the answer is built page by page.
const NDJSON_PAGE_EVENTS: usize = 500;

/// `GET /streams/{stream}`.
pub async fn read(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // `$parked-{group}`: a consumer group's parked events, read-only (JSON pages).
    if let Ok(Path(raw)) = &path
        && let Some(group) = raw.strip_prefix("$parked-")
    {
        let q = query_pairs(query)?;
        let mut read = read_stream_query(&q)?;
        read.limit = super::default_limit(&q, read.limit, &st);
        super::check_read_limit(&st, read.limit)?;
        return super::groups::read_parked_stream(&st, group, read).await;
    }
    let stream = stream_from_path(path)?;
    let q = query_pairs(query)?;
    let mut read = read_stream_query(&q)?;
    read.limit = super::default_limit(&q, read.limit, &st);
    if wants(&headers, Wants::Json) == Wants::Ndjson {
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
        return Ok(ndjson_stream_read(st, stream, read, first));
    }
    let slice = st.store.read_stream(&stream, read).await?;
    st.metrics.events_read.inc_by(slice.events.len() as u64);
    Ok(json_page(&slice.events, slice.next.map(|r| r.0)))
}

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

fn ndjson_stream_read(
    st: AppState,
    stream: StreamName,
    read: ReadStream,
    first: eventfold_core::StreamSlice,
) -> Response {
    let total = read.limit;
    let state = (st, stream, read, Some(first), 0usize);
    let body = futures::stream::unfold(state, move |(st, stream, read, page, sent)| async move {
        let page = match page {
            Some(p) => p,
            None => return None,
        };
        let mut out = Vec::new();
        let mut sent = sent;
        for e in page.events.iter().take(total - sent) {
            out.extend_from_slice(&ndjson_line(e));
            sent += 1;
            st.metrics.events_read.inc();
        }
        let next = match page.next {
            Some(r) if sent < total => {
                let more = ReadStream {
                    from: ReadFrom::At(r),
                    limit: (total - sent).min(NDJSON_PAGE_EVENTS),
                    ..read
                };
                match st.store.read_stream(&stream, more).await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "NDJSON read ended early");
                        None
                    }
                }
            }
            _ => None,
        };
        Some((
            Ok::<_, std::io::Error>(Bytes::from(out)),
            (st, stream, read, next, sent),
        ))
    });
    ([(CONTENT_TYPE, NDJSON)], Body::from_stream(body)).into_response()
}

/// `GET /streams/{stream}/info`.
pub async fn info(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let stream = stream_from_path(path)?;
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
pub async fn list(
    State(st): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query_pairs(query)?;
    let mut list = ListStreams {
        limit: 100,
        ..ListStreams::default()
    };
    for (k, v) in q {
        match k.as_str() {
            "prefix" => list.prefix = Some(v),
            "after" => list.after = Some(v),
            "limit" => {
                list.limit = v.parse().map_err(|_| {
                    ApiError::new(
                        400,
                        "invalid_query",
                        format!("query parameter `limit={v}` must be an unsigned integer"),
                    )
                })?
            }
            _ => {
                return Err(ApiError::new(
                    400,
                    "invalid_query",
                    format!(
                        "query parameter `{k}` is not known here; known parameters: prefix, after, limit"
                    ),
                ));
            }
        }
    }
    let page = st.store.list_streams(list).await?;
    Ok(axum::Json(StreamsResponse {
        streams: page.streams.iter().map(ToString::to_string).collect(),
        next: page.next.map(|n| n.to_string()),
    })
    .into_response())
}

/// `GET /streams/{stream}/metadata`.
pub async fn get_metadata(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let stream = stream_from_path(path)?;
    Ok(axum::Json(st.store.get_metadata(&stream).await?).into_response())
}

/// `PUT /streams/{stream}/metadata`.
pub async fn put_metadata(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let stream = stream_from_path(path)?;
    let body = read_body(&headers, body, st.limits.body_bytes_max()).await?;
    let md: StreamMetadata = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            400,
            "invalid_metadata",
            format!("the body is not stream metadata ({{\"max_count\"?, \"max_age_seconds\"?, \"truncate_before\"?, \"custom\"?}}): {e}"),
        )
    })?;
    st.store.set_metadata(&stream, md.clone()).await?;
    Ok(axum::Json(md).into_response())
}

/// `DELETE /streams/{stream}[?hard=true]`.
pub async fn delete(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let stream = stream_from_path(path)?;
    let mut mode = DeleteMode::Soft;
    for (k, v) in query_pairs(query)? {
        match (k.as_str(), v.as_str()) {
            ("hard", "true") => mode = DeleteMode::Hard,
            ("hard", "false") => mode = DeleteMode::Soft,
            _ => {
                return Err(ApiError::new(
                    400,
                    "invalid_query",
                    format!(
                        "query parameter `{k}={v}` is not known here; use hard=true or hard=false"
                    ),
                ));
            }
        }
    }
    let expected = expected_revision(&headers)?;
    st.store.delete_stream(&stream, expected, mode).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
