use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eventfold_core::{AllSlice, ReadAll, ReadFrom};
use eventfold_protocol::{QueryPairs, READ_ALL_PARAMS, read_all_query};

use super::encode::{Shape, cloudevents_page, json_page};
use crate::auth::{Right, Scope, StreamSet};
use crate::authorized::{ApiRequest, Authorized, PathParams};
use crate::error::ApiResult;
use crate::negotiate::{Wants, negotiate};
use crate::state::AppState;

const NDJSON_PAGE_EVENTS: usize = 500;

/// `GET /all?from=&direction=&limit=&type=&category=&stream_prefix=`.
#[derive(Debug)]
pub struct ReadAllRequest {
    read: ReadAll,
    limit_given: bool,
}

impl ApiRequest for ReadAllRequest {
    const PARAMS: &'static [&'static str] = READ_ALL_PARAMS;
    fn parse(_path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        Ok(ReadAllRequest {
            read: read_all_query(query)?,
            limit_given: query.contains("limit"),
        })
    }
    fn scope(&self) -> Scope {
        Scope::Streams(Right::Read, StreamSet::of_filter(&self.read.filter))
    }
}

/// `GET /all`.
pub async fn read(
    State(st): State<AppState>,
    req: Authorized<ReadAllRequest>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let ReadAllRequest {
        mut read,
        limit_given,
    } = req.into_inner();
    read.limit = super::default_limit(limit_given, read.limit, &st);
    let asked = negotiate(&headers, Wants::Json);
    let shape = Shape::of(asked.cloudevents);
    if asked.wants == Wants::Ndjson {
        super::check_read_limit(&st, read.limit)?;
        let first = st
            .store
            .read_all(ReadAll {
                limit: read.limit.min(NDJSON_PAGE_EVENTS),
                ..read.clone()
            })
            .await?;
        return Ok(ndjson_all(st, read, first, shape));
    }
    let slice = st.store.read_all(read).await?;
    st.metrics.events_read.inc_by(slice.events.len() as u64);
    let next = slice.next.map(|p| p.0);
    Ok(match asked.wants {
        Wants::CloudEventsBatch => cloudevents_page(&slice.events, next),
        _ => json_page(&slice.events, next),
    })
}

fn ndjson_all(st: AppState, read: ReadAll, first: AllSlice, shape: Shape) -> Response {
    // Pages are read and encoded by a task of their own, one page ahead of the socket: the
    // next page's read and encoding run while the connection writes the previous one.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let total = read.limit;
        let mut sent = 0usize;
        let mut page = first;
        loop {
            let take = page.events.len().min(total - sent);
            let out = shape.lines(&page.events[..take]);
            sent += take;
            st.metrics.events_read.inc_by(take as u64);
            let next = page.next;
            drop(page);
            if tx.send(out).await.is_err() {
                return; // The client went away.
            }
            let Some(p) = next.filter(|_| sent < total) else {
                return;
            };
            let more = ReadAll {
                from: ReadFrom::At(p),
                limit: (total - sent).min(NDJSON_PAGE_EVENTS),
                ..read.clone()
            };
            match st.store.read_all(more).await {
                Ok(p) => page = p,
                Err(e) => {
                    tracing::warn!(error = %e, "NDJSON read ended early");
                    return;
                }
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    (
        [(CONTENT_TYPE, shape.ndjson_media_type())],
        Body::from_stream(body),
    )
        .into_response()
}
