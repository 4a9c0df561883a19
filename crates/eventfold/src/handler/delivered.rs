//! One delivery handled once, for the runners whose retries are someone else's (a server's
//! consumer group, a broker): [`GroupRunner`](super::GroupRunner) and
//! [`TransportRunner`](super::TransportRunner) settle what this decides in their own terms.

use eventfold_core::RecordedEvent;

use super::observe::{HandledOutcome, Observer};
use super::{EventHandler, Permanent};
use crate::event::DomainEvent;
use crate::upcast::Upcasters;

/// What came of one delivery.
#[derive(Debug)]
pub(crate) enum Delivered {
    /// Not an event type of `E`: settle it (ack) without handling.
    Foreign,
    /// The handler succeeded: ack it.
    Handled,
    /// It failed; `reason` names the handler and its error.
    Failed {
        /// Dead-letter (park) it now: the handler said [`Permanent`], or the event did not
        /// decode. Otherwise retry it per the group's policy.
        permanent: bool,
        reason: String,
    },
}

/// Decodes `event` (with `upcasters`) and calls `handler` once, telling `observer` how it went
/// (with `attempt`, the delivery's attempt number). Events of types `E` does not know are
/// neither handled nor reported.
pub(crate) async fn handle_delivery<E, H>(
    handler: &H,
    upcasters: &Upcasters,
    observer: &Observer,
    event: RecordedEvent,
    attempt: u32,
) -> Delivered
where
    E: DomainEvent,
    H: EventHandler<E> + ?Sized,
{
    if !E::knows(event.event_type.as_str()) {
        return Delivered::Foreign;
    }
    let started = observer.start();
    let event_type = event.event_type.clone();
    let delivered = match upcasters.decode::<E>(event) {
        Err(e) => Delivered::Failed {
            permanent: true,
            reason: e.to_string(),
        },
        Ok(envelope) => {
            let span = crate::spans::process(
                handler.name(),
                &envelope.id,
                &envelope.stream,
                &envelope.metadata,
            );
            match span.instrument(handler.handle(&envelope)).await {
                Ok(()) => Delivered::Handled,
                Err(error) => {
                    let permanent = Permanent::is(&error);
                    tracing::warn!(handler = handler.name(), id = %envelope.id, attempt, %error, permanent, "handler failed");
                    span.fail("handler_failed", &error);
                    Delivered::Failed {
                        permanent,
                        reason: format!("handler {}: {error}", handler.name()),
                    }
                }
            }
        }
    };
    let outcome = match delivered {
        Delivered::Failed { .. } => HandledOutcome::Failed,
        _ => HandledOutcome::Succeeded,
    };
    observer.report(
        started,
        handler.name(),
        event_type.as_str(),
        outcome,
        attempt,
        u32::from(attempt > 1),
    );
    delivered
}
