use super::{EventHandler, Permanent};
use crate::BoxError;
use crate::event::{CodecError, DomainEvent, Envelope};
use crate::retry::RetryPolicy;

/// What came of handling one event under a [`RetryPolicy`].
#[derive(Debug)]
pub enum Attempted {
    /// An attempt succeeded.
    Succeeded {
        /// How many attempts it took (1: the first).
        attempts: u32,
    },
    /// Every attempt failed (or one failed with [`Permanent`]).
    Failed {
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        error: BoxError,
    },
}

impl Attempted {
    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        match self {
            Attempted::Succeeded { attempts } | Attempted::Failed { attempts, .. } => *attempts,
        }
    }
}

/// Calls `handler` on `envelope` until it succeeds, it fails with [`Permanent`], or `policy`'s
/// attempts are used up, sleeping [`RetryPolicy::delay_for`] between attempts (on tokio's
/// clock, so a paused test clock controls it).
pub async fn handle_with_retry<E, H>(
    handler: &H,
    envelope: &Envelope<E>,
    policy: &RetryPolicy,
) -> Attempted
where
    E: DomainEvent,
    H: EventHandler<E> + ?Sized,
{
    let span = crate::spans::process(
        handler.name(),
        &envelope.id,
        &envelope.stream,
        &envelope.metadata,
    );
    let (attempts, result) = span
        .instrument(policy.run(
            move || handler.handle(envelope),
            |error| !Permanent::is(error),
            |attempt, error, delay| {
                tracing::info!(handler = handler.name(), id = %envelope.id, attempt, ?delay, %error, "handler failed: retrying");
            },
        ))
        .await;
    span.set_attributes(|| {
        vec![eventfold_trace::Attribute::new(
            "eventfold.attempts",
            i64::from(attempts),
        )]
    });
    match result {
        Ok(()) => Attempted::Succeeded { attempts },
        Err(error) => {
            tracing::warn!(handler = handler.name(), id = %envelope.id, attempt = attempts, %error, "handler failed: giving up");
            span.fail("handler_failed", &error);
            Attempted::Failed { attempts, error }
        }
    }
}

/// Handles a `decoded` event under `policy`: `Ok` with the attempts it took, or `Err` with the
/// attempts made and the reason to dead-letter it (an event that did not decode: 0 attempts).
pub(crate) async fn decode_and_handle<E, H>(
    handler: &H,
    decoded: Result<Envelope<E>, CodecError>,
    policy: &RetryPolicy,
) -> Result<u32, (u32, String)>
where
    E: DomainEvent,
    H: EventHandler<E> + ?Sized,
{
    let envelope = decoded.map_err(|e| (0, e.to_string()))?;
    match handle_with_retry(handler, &envelope, policy).await {
        Attempted::Succeeded { attempts } => Ok(attempts),
        Attempted::Failed { attempts, error } => Err((attempts, error.to_string())),
    }
}
