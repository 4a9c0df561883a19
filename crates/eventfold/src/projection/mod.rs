//! Projections: read models kept up to date from the events of `$all`.
//!
//! A [`Projection`] names itself and says which events it reads. Where its state lives decides
//! how it applies them: in memory ([`MemoryProjection`], [`InMemoryReadModel`]), or in a
//! database whose transaction also holds the checkpoint (`eventfold-sqlite`,
//! `eventfold-postgres`). Each of those is a [`ReadModel`]: something that applies a batch of
//! events *and* records the checkpoint after it as one atomic step, so a restart neither skips
//! an event nor applies one twice.
//!
//! A [`ProjectionProcessor`] drives a read model: it reads `$all` from the stored checkpoint
//! (history first, then live events, see [`crate::batches`]), decodes each batch through the
//! [`crate::Upcasters`], hands it to the read model, and publishes where it got to
//! ([`ProcessorHandle::status`], [`ProcessorHandle::lag`]). A transient store error (a network
//! blip of a remote server, an I/O error) makes it start over from the checkpoint after a delay
//! ([`ProjectionProcessor::store_retry`], the framework's one rule, see [`crate::retry`]); any
//! other failure stops it. [`ProjectionProcessor::rebuild`] resets the read model and replays
//! everything, reporting progress.
//!
//! # On a message broker
//!
//! A broker orders per key (per stream) at best and delivers at least once, so a checkpoint of
//! one global position means nothing there. A [`TransportProjection`] consumes a topic as a
//! consumer group into a [`StreamReadModel`] instead: the read model keeps the revision of the
//! last event applied *per stream*, beside its state and in the same atomic step, and applies
//! only the next revision of each stream (a compare-and-apply, so several consumers may share
//! it). A duplicate is acked unapplied; an event that came before its predecessors is delivered
//! again later ([`Gaps::Wait`]) or applied anyway ([`Gaps::Skip`], for topics that carry only
//! part of each stream). Retries, dead letters, upcasters and reconnects are those of
//! [`TransportRunner`](crate::TransportRunner). [`InMemoryReadModel`] is both kinds of read
//! model, and so are those of `eventfold-sqlite` and `eventfold-postgres`.

mod memory;
mod processor;
mod transport;

use std::sync::Arc;

use eventfold_core::{EventFilter, EventType, Position, StoreError};

use crate::BoxError;
use crate::event::{CodecError, DomainEvent, Envelope};

pub use memory::{InMemoryReadModel, MemoryProjection};
pub(crate) use processor::head;
pub use processor::{
    BATCH_SIZE_DEFAULT, Lag, Phase, ProcessorHandle, ProcessorStatus, ProjectionProcessor,
    RebuildProgress, RebuildReport,
};
pub use transport::{Gaps, StreamReadModel, TransportProjection};

/// A projection: its name (the key of its checkpoint) and the events it reads. Where its state
/// lives and how it applies a batch is the business of a sub-trait ([`MemoryProjection`], or
/// the SQLite and PostgreSQL ones in their crates).
pub trait Projection: Send + Sync + 'static {
    /// The events it reads.
    type Event: DomainEvent;

    /// Its name, unique among the projections of one read-model store: the checkpoint is kept
    /// under it.
    fn name(&self) -> &str;

    /// Which events of `$all` it reads: by default every type of [`Projection::Event`], from
    /// any stream. Narrow it with a category or a stream prefix; add old type names when an
    /// upcaster renames a type. Only events that pass are decoded, so events of types the enum
    /// does not know never reach the projection.
    fn filter(&self) -> EventFilter {
        filter_for::<Self::Event>()
    }
}

/// A filter on every event type of `E` (and nothing else).
pub fn filter_for<E: DomainEvent>() -> EventFilter {
    EventFilter {
        types: E::EVENT_TYPES
            .iter()
            .filter_map(|t| EventType::new(*t).ok())
            .collect(),
        ..EventFilter::default()
    }
}

/// A read-model store: applies a batch of decoded events and records the checkpoint after it
/// as **one atomic step** (a database transaction, or one lock in memory). The
/// [`ProjectionProcessor`] drives it; implement it for a store of your own (a wrapper that
/// also publishes, say).
#[async_trait::async_trait]
pub trait ReadModel: Send + Sync + 'static {
    /// The events it reads.
    type Event: DomainEvent;

    /// The projection's name (the checkpoint key).
    fn name(&self) -> &str;

    /// Which events of `$all` it reads.
    fn filter(&self) -> EventFilter;

    /// The position of the last event applied, `None` when none was.
    async fn checkpoint(&self) -> Result<Option<Position>, BoxError>;

    /// Applies `events` (in `$all` order, at least one) and records `checkpoint` (the position
    /// of the last one) together: both or neither. On error nothing of the batch may remain.
    async fn apply(
        &self,
        events: Vec<Envelope<Self::Event>>,
        checkpoint: Position,
    ) -> Result<(), BoxError>;

    /// Empties the read model (the projection's reset hook) and forgets the checkpoint,
    /// together, so that the next run replays from the start.
    async fn reset(&self) -> Result<(), BoxError>;
}

/// An error shared between the processor's status and whoever waits on it.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why a projection processor stopped.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Reading events from the store failed: with an error retrying cannot fix, or with a
    /// transient one (while [`Phase::Retrying`], or after
    /// [`ProjectionProcessor::store_retry`] gave up).
    #[error(
        "projection {projection:?}: reading events from the store failed: {source}; the checkpoint is intact, restart the processor once the store is back"
    )]
    Store {
        /// The projection.
        projection: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// An event that passed the projection's filter could not be decoded.
    #[error(
        "projection {projection:?}: the event at position {position} could not be decoded: {source}; nothing of its batch was applied"
    )]
    Decode {
        /// The projection.
        projection: String,
        /// Position of the event.
        position: u64,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
    /// The projection's own code (or its database) failed on a batch.
    #[error(
        "projection {projection:?} failed on the batch of positions {first}..={last}: {source}; the read model and its checkpoint were rolled back together, so a restart retries this batch"
    )]
    Apply {
        /// The projection.
        projection: String,
        /// Position of the first event of the batch.
        first: u64,
        /// Position of the last event of the batch.
        last: u64,
        /// What the projection or its store said.
        #[source]
        source: SharedError,
    },
    /// Loading or resetting the checkpoint failed.
    #[error("projection {projection:?}: {action} failed: {source}")]
    Checkpoint {
        /// The projection.
        projection: String,
        /// What was being done ("loading the checkpoint", "resetting the read model").
        action: &'static str,
        /// The read-model store's error.
        #[source]
        source: SharedError,
    },
    /// The subscription ended although it only ends with an error.
    #[error(
        "projection {projection:?}: the event subscription ended unexpectedly; restart the processor"
    )]
    SubscriptionEnded {
        /// The projection.
        projection: String,
    },
    /// The processor stopped (on request) before it reached the position waited for.
    #[error(
        "projection {projection:?}: the processor stopped before reaching the position waited for"
    )]
    Stopped {
        /// The projection.
        projection: String,
    },
    /// The processor's task panicked or was cancelled.
    #[error(
        "projection {projection:?}: the processor task ended abnormally ({reason}); the checkpoint is that of the last whole batch"
    )]
    TaskEnded {
        /// The projection.
        projection: String,
        /// Panic or cancellation.
        reason: String,
    },
}
