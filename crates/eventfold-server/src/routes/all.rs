use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use eventfold_core::{AllSlice, ReadAll, ReadFrom};
use eventfold_protocol::{QueryPairs, READ_ALL_PARAMS, read_all_query};

use super::encode::{NDJSON_PAGE_EVENTS, Page, Shape, cloudevents_page, json_page, paged_ndjson};
use crate::auth::{Right, Scope, StreamSet};
use crate::authorized::{ApiRequest, Authorized, PathParams};
use crate::error::ApiResult;
use crate::negotiate::{Wants, negotiate};
use crate::state::AppState;

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
    let store = st.store.clone();
    paged_ndjson(st, first.into(), read.limit, shape, move |p, limit| {
        let more = ReadAll {
            from: ReadFrom::At(p),
            limit,
            ..read.clone()
        };
        let store = store.clone();
        async move { store.read_all(more).await.map(Page::from) }
    })
}
