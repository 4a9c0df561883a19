//! `GET /stats`: the figures of the console's overview that `/metrics` does not have (version,
//! uptime, the log's head, streams, bytes on disk, groups), in one small JSON document.

use axum::Json;
use axum::extract::State;
use eventfold_core::{ListStreams, ReadAll};
use eventfold_protocol::{STATS_STREAMS_COUNT_MAX, ServerStats};

use crate::authorized::{Authorized, OnServer};
use crate::error::ApiResult;
use crate::state::AppState;

/// Stream names asked for per page while counting.
const COUNT_PAGE: usize = 1_000;

/// `GET /stats`.
pub async fn stats(
    State(st): State<AppState>,
    _req: Authorized<OnServer>,
) -> ApiResult<Json<ServerStats>> {
    let head = st.store.read_all(ReadAll::backward(1)).await?;
    let head_position = head.events.first().map(|e| e.position.0);
    let (streams, streams_complete) = count_streams(&st).await?;
    let stored_bytes = match st.stored_bytes.clone() {
        None => None,
        Some(measure) => match tokio::task::spawn_blocking(move || measure()).await {
            Ok(Ok(n)) => Some(n),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot measure the store's size on disk");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "the task measuring the store's size failed");
                None
            }
        },
    };
    Ok(Json(ServerStats {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: st.started.elapsed().as_secs(),
        head_position,
        streams,
        streams_complete,
        stored_bytes,
        subscriptions_active: u64::try_from(st.metrics.subscriptions_active.get()).unwrap_or(0),
        groups: st.groups.as_ref().map(|g| g.names().len() as u64),
        auth: st.auth.enabled(),
    }))
}

/// Counts stream names, at most [`STATS_STREAMS_COUNT_MAX`]; whether that was all of them.
async fn count_streams(st: &AppState) -> ApiResult<(u64, bool)> {
    let mut count = 0usize;
    let mut after = None;
    loop {
        let limit = COUNT_PAGE.min(STATS_STREAMS_COUNT_MAX - count);
        let page = st
            .store
            .list_streams(ListStreams {
                prefix: None,
                after,
                limit,
            })
            .await?;
        count += page.streams.len();
        match page.next {
            None => return Ok((count as u64, true)),
            Some(_) if count >= STATS_STREAMS_COUNT_MAX => return Ok((count as u64, false)),
            Some(next) => after = Some(next.to_string()),
        }
    }
}
