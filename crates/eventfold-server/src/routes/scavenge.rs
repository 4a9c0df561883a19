//! `POST /scavenge` starts a scavenge of the event store in the background (one at a time);
//! `GET /scavenge` says how far it has got and, once done, what it reclaimed
//! (`eventfold_protocol::scavenge`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use eventfold_core::Timestamp;
use eventfold_protocol::ErrorCode;
use eventfold_protocol::scavenge::{ScavengeReport, ScavengeState, ScavengeStatus};

use crate::authorized::{Admin, Authorized, OnServer};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The status, as it stands.
fn status_of(st: &AppState) -> ScavengeStatus {
    st.scavenge_status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Changes the status.
fn update(st: &AppState, f: impl FnOnce(&mut ScavengeStatus)) {
    f(&mut st.scavenge_status.lock().unwrap_or_else(|e| e.into_inner()));
}

/// `POST /scavenge`: 202 with the status of the scavenge it started.
pub async fn start(
    State(st): State<AppState>,
    _req: Authorized<OnServer<Admin>>,
) -> ApiResult<(StatusCode, Json<ScavengeStatus>)> {
    let Some(source) = st.scavenge.clone() else {
        return Err(ApiError::new(
            ErrorCode::ScavengeUnavailable,
            "this server cannot scavenge its store: it keeps its events in PostgreSQL, where \
             eventfold does not remove the rows of deleted or expired events yet",
        ));
    };
    {
        let mut s = st.scavenge_status.lock().unwrap_or_else(|e| e.into_inner());
        if s.state == ScavengeState::Running {
            return Err(ApiError::new(
                ErrorCode::ScavengeRunning,
                "a scavenge is already running: GET /scavenge says how far it has got",
            ));
        }
        *s = ScavengeStatus {
            state: ScavengeState::Running,
            started_at: Timestamp::now().rfc3339().map(|t| t.as_str().to_owned()),
            ..ScavengeStatus::default()
        };
    }
    let task_state = st.clone();
    tokio::task::spawn_blocking(move || {
        let st = task_state;
        let result = source(&mut |done, total, so_far: &ScavengeReport| {
            update(&st, |s| {
                s.segments_done = done;
                s.segments_total = total;
                s.report = so_far.clone();
            });
        });
        update(&st, |s| match result {
            Ok(Some(report)) => {
                tracing::info!(?report, "scavenge finished");
                s.state = ScavengeState::Finished;
                s.report = report;
            }
            Ok(None) => {
                s.state = ScavengeState::Failed;
                s.error = Some("another scavenge of the store was running".into());
            }
            Err(e) => {
                tracing::warn!(error = %e, "scavenge failed");
                s.state = ScavengeState::Failed;
                s.error = Some(e.to_string());
            }
        });
    });
    Ok((StatusCode::ACCEPTED, Json(status_of(&st))))
}

/// `GET /scavenge`.
pub async fn status(
    State(st): State<AppState>,
    _req: Authorized<OnServer<Admin>>,
) -> Json<ScavengeStatus> {
    Json(status_of(&st))
}
