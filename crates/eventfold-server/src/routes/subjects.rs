//! `DELETE /subjects/{subject}/key`: crypto-shredding. Deletes a data subject's key, so every
//! event sealed with it reads from then on with its data redacted (`eventfold_shred`).

use axum::extract::State;
use axum::http::StatusCode;
use eventfold_protocol::{ErrorCode, QueryPairs};
use eventfold_shred::{Deleted, Subject};

use crate::auth::{Right, Scope};
use crate::authorized::{ApiRequest, Authorized, PathParams};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A request on the data subject of its `{subject}` path parameter. A subject's events may be
/// in any stream, so it needs `admin` over all of them.
#[derive(Debug)]
pub struct OnSubject {
    /// The subject.
    pub subject: Subject,
}

impl ApiRequest for OnSubject {
    const PARAMS: &'static [&'static str] = &[];
    fn parse(path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        query.check_known(Self::PARAMS)?;
        Ok(OnSubject {
            subject: Subject::new(path.get("subject")?)?,
        })
    }
    fn scope(&self) -> Scope {
        Scope::every(Right::Admin)
    }
}

/// `DELETE /subjects/{subject}/key`: 204 once the key is gone from the key store (durably),
/// also when it was deleted before; 404 when the subject never had a key.
pub async fn delete_key(
    State(st): State<AppState>,
    req: Authorized<OnSubject>,
) -> ApiResult<StatusCode> {
    let Some(keys) = st.subject_keys.clone() else {
        return Err(ApiError::new(
            ErrorCode::ShreddingUnavailable,
            "this server keeps no subject keys (its events are in PostgreSQL): crypto-shredding \
             needs the embedded engine (eventfold serve --data DIR)",
        ));
    };
    let subject = &req.subject;
    match keys.delete(subject).await? {
        Deleted::Now => {
            // Events decrypted before are held by the live hub's ring and the encoded lines:
            // from now on subscribers read them again from the store.
            st.live.forget_events();
            st.encoded.clear();
            // The subject's id stays out of the log: it may itself be personal data.
            tracing::info!(
                "a data subject's key was deleted: its sealed data is unreadable from now on"
            );
            Ok(StatusCode::NO_CONTENT)
        }
        Deleted::Already => Ok(StatusCode::NO_CONTENT),
        Deleted::NeverHad => Err(ApiError::new(
            ErrorCode::SubjectKeyNotFound,
            format!(
                "the data subject {:?} has no key on this server: no event naming it in `$subject` was ever appended here (check the id)",
                subject.as_str()
            ),
        )),
    }
}
