//! Event handlers: code that reacts to events (sends an email, reserves stock, calls another
//! service), written once and run four ways with the same failure handling:
//!
//! - [`HandlerRunner`]: on any [`EventStore`](eventfold_core::EventStore) (the embedded engine,
//!   or a server through the client), reading `$all` from a [`CheckpointStore`](crate::CheckpointStore)
//!   checkpoint; retries in-process per a [`RetryPolicy`](crate::RetryPolicy), then writes the event to a dead-letter
//!   stream ([`DeadLetters`]) and carries on. A transient store error (a remote server's
//!   network blip, an I/O error) makes it start over from its checkpoint after a delay
//!   ([`HandlerRunner::store_retry`], the framework's one rule, see [`crate::retry`]).
//! - [`GroupRunner`]: as a consumer of a server's consumer group; acks what succeeded and nacks
//!   what failed, so the server's backoff retries it and parks it after `max_deliveries`.
//! - [`TransportRunner`]: as a consumer group of a topic on a message broker (any
//!   [`Transport`](eventfold_transport::Transport)); acks what succeeded, lets the broker retry
//!   what failed with the [`RetryPolicy`](crate::RetryPolicy)'s delays and dead-letter it after
//!   its attempts.
//! - [`Bus::subscribe_handler`](crate::Bus::subscribe_handler): in-process, on the [`Bus`](crate::Bus).
//!
//! Every runner is at-least-once: an event can reach the handler again after a crash or a
//! redelivery. Wrap a handler whose effects must not repeat in [`Idempotent`].

mod dead_letter;
pub(crate) mod delivered;
mod group;
pub(crate) mod observe;
mod processed;
pub(crate) mod retry;
mod runner;
pub(crate) mod running;
pub(crate) mod source;
mod transport;

use std::sync::Arc;
use std::time::Duration;

pub use dead_letter::{DEAD_LETTER_EVENT_TYPE, DeadLetter, DeadLetters};
pub use group::GroupRunner;
pub use observe::{Handled, HandledOutcome, HandlerObserver};
pub use processed::InMemoryProcessedIds;
pub use retry::{Attempted, handle_with_retry};
pub use runner::{HandlerRunner, ReplayReport};
pub use running::{HandlerStats, RunnerError, RunningHandler, StoreRetrying};
pub use source::TransportSource;
pub use transport::TransportRunner;

use crate::BoxError;
use crate::event::{DomainEvent, Envelope};
use crate::idempotency::ProcessedIds;

/// Code that reacts to the events of one [`DomainEvent`] enum.
///
/// `handle` gets each event in an [`Envelope`] (id, stream, position, metadata). To write
/// events or send commands as a consequence, use [`Envelope::context`] so they carry the
/// correlation id on and name this event as their cause. An `Err` is a failed attempt: the
/// runner retries it; return [`Permanent`] for a failure no retry will fix.
#[async_trait::async_trait]
pub trait EventHandler<E: DomainEvent>: Send + Sync + 'static {
    /// The handler's name: it names its checkpoint, its dead-letter stream
    /// (`deadletter-{name}`) and its consumer in a group. Keep it stable across releases and
    /// valid in a stream name (letters, digits, `-`, `_`, `.`).
    fn name(&self) -> &str;

    /// Handles one event.
    async fn handle(&self, envelope: &Envelope<E>) -> Result<(), BoxError>;
}

#[async_trait::async_trait]
impl<E: DomainEvent, H: EventHandler<E> + ?Sized> EventHandler<E> for Arc<H> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn handle(&self, envelope: &Envelope<E>) -> Result<(), BoxError> {
        (**self).handle(envelope).await
    }
}

/// A failure no retry will fix (the event is invalid for this handler): returned by a handler,
/// it skips the remaining attempts and dead-letters (or parks) the event at once.
#[derive(Debug, thiserror::Error)]
#[error("permanent failure: {0}")]
pub struct Permanent(pub BoxError);

impl Permanent {
    /// Wraps `error` as permanent.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Permanent(error.into())
    }

    /// Whether `error` is a [`Permanent`] failure.
    pub fn is(error: &BoxError) -> bool {
        error.downcast_ref::<Permanent>().is_some()
    }
}

/// A handler that skips events it already finished: it asks [`ProcessedIds::seen`] before
/// calling the inner handler and records the id with [`ProcessedIds::mark`] after it
/// succeeded, for a time-to-live. Turns the runners' at-least-once delivery into effectively
/// once for handlers whose effects cannot be repeated safely.
///
/// A crash between the inner handler's success and the mark still repeats the event: make the
/// effect itself idempotent (or keep the id in the effect's own transaction) where even that
/// window matters.
pub struct Idempotent<H> {
    inner: H,
    ids: Arc<dyn ProcessedIds>,
    ttl: Duration,
}

impl<H> std::fmt::Debug for Idempotent<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotent")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<H> Idempotent<H> {
    /// `inner`, skipping the event ids recorded in `ids`; each id is kept for `ttl` (choose it
    /// longer than the longest redelivery delay).
    pub fn new(inner: H, ids: Arc<dyn ProcessedIds>, ttl: Duration) -> Self {
        Idempotent { inner, ids, ttl }
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.inner
    }
}

#[async_trait::async_trait]
impl<E: DomainEvent, H: EventHandler<E>> EventHandler<E> for Idempotent<H> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(&self, envelope: &Envelope<E>) -> Result<(), BoxError> {
        let name = self.inner.name();
        if self.ids.seen(name, envelope.id).await? {
            tracing::debug!(handler = name, id = %envelope.id, "already processed: skipped");
            return Ok(());
        }
        self.inner.handle(envelope).await?;
        self.ids.mark(name, envelope.id, self.ttl).await?;
        Ok(())
    }
}
