//! The admin routes that moving a store needs (`eventfold export` / `eventfold import`): an
//! append that keeps the events' original timestamps and revisions, and a listing of every
//! stream the store knows, deleted ones included. Shapes: `eventfold_protocol::moving`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eventfold_core::ListStreams;
use eventfold_protocol::QueryPairs;
use eventfold_protocol::moving::{KnownStreamsResponse, StreamStateJson, parse_import_body};

use super::read_body;
use super::streams::{append_response, expected_revision};
use crate::auth::{Right, Scope};
use crate::authorized::{Admin, ApiRequest, Authorized, OnStream, PathParams};
use crate::error::ApiResult;
use crate::state::AppState;

/// `POST /streams/{stream}/import`: an append whose events keep the timestamps they had in the
/// store they come from, landing at `first_revision`. `admin` on the stream: an ordinary
/// writer never sets a timestamp.
pub async fn import(
    State(st): State<AppState>,
    req: Authorized<OnStream<Admin>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let stream = req.into_inner().stream;
    let expected = expected_revision(&headers)?;
    let body = read_body(
        &headers,
        body,
        st.limits.body_bytes_max(),
        st.limits.body_read_timeout,
    )
    .await?;
    let batch = parse_import_body(&body)?;
    let r = st.store.append_imported(&stream, expected, batch).await?;
    let status = if r.idempotent_replay {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(append_response(&r))).into_response())
}

/// `GET /admin/streams?prefix=&after=&limit=`: every stream the store knows, deleted ones
/// included, with its next revision, soft-delete point, tombstone and metadata.
#[derive(Debug)]
pub struct KnownStreamsRequest(ListStreams);

impl ApiRequest for KnownStreamsRequest {
    const PARAMS: &'static [&'static str] = super::streams::LIST_PARAMS;
    fn parse(_path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        super::streams::parse_listing(query, KNOWN_LIMIT_DEFAULT).map(KnownStreamsRequest)
    }
    fn scope(&self) -> Scope {
        super::streams::listing_scope(Right::Admin, &self.0)
    }
}

/// Streams per page of `GET /admin/streams` when no `limit` is given.
const KNOWN_LIMIT_DEFAULT: u64 = 100;

/// `GET /admin/streams`.
pub async fn known_streams(
    State(st): State<AppState>,
    req: Authorized<KnownStreamsRequest>,
) -> ApiResult<Response> {
    let page = st.store.list_known_streams(req.into_inner().0).await?;
    Ok(axum::Json(KnownStreamsResponse {
        streams: page.streams.iter().map(StreamStateJson::from).collect(),
        next: page.next.map(|n| n.to_string()),
    })
    .into_response())
}
