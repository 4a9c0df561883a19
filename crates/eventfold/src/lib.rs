//! The eventfold framework: the patterns of event-driven services as Rust traits.
//!
//! Everything here is written against [`eventfold_core::EventStore`] (and, for handlers on a
//! message broker, [`eventfold_transport::Transport`]), so the same code runs on the embedded
//! engine in-process, on a remote `eventfold serve` through the client and on any broker.
//!
//! - [`DomainEvent`] (derive it) turns a Rust enum into typed events with a type name and a
//!   schema version per variant, JSON or MessagePack on the wire ([`Codec`]).
//! - [`Context`] carries correlation and causation ids from a command or an event to every event
//!   it causes.
//! - [`Upcasters`] turn old schema versions into the current one on read, chained.
//! - [`Aggregate`] decides commands against state rebuilt from its stream; [`Repository`]
//!   loads it (from a snapshot, see [`SnapshotPolicy`]), executes commands with optimistic
//!   concurrency and bounded retries, and answers temporal queries.
//! - [`Decision`]s decide on the events a query matches (by types and tags, across streams)
//!   instead of one aggregate's stream: a [`Decider`] folds them, decides and appends on the
//!   condition that nothing matching the query came in since (Dynamic Consistency Boundaries,
//!   `EventStore::append_with_condition`), retrying on fresh events after a conflict.
//! - [`CheckpointStore`] remembers where a consumer got to; [`batches`] reads `$all` from
//!   there in batches, catch-up then live.
//! - [`saga`]: process managers ([`Saga`], [`SagaManager`]) with durable timeouts and
//!   compensation, their state kept in the store; their events come from `$all` or from a
//!   consumer group on a message broker ([`SagaManager::from_transport`]), redeliveries
//!   recognised by event id.
//! - [`outbox`]: the [`OutboxRelay`] publishes appended events to a [`Sink`] (a channel, a
//!   [`WebhookSink`]) at least once, in order; the store is the outbox.
//! - [`Projection`]s keep read models up to date: a [`ProjectionProcessor`] decodes batches
//!   of `$all` and hands each to a [`ReadModel`] that applies it and its checkpoint atomically
//!   (in memory here, SQLite and PostgreSQL in `eventfold-sqlite` and `eventfold-postgres`),
//!   rebuilds with progress and shows its lag; [`testing::ProjectionTest`] tests one in memory.
//!   On a message broker, where there is no global order, a [`TransportProjection`] applies
//!   each event once per stream revision into a [`StreamReadModel`] (duplicates skipped,
//!   out-of-order events waiting for their predecessors, [`Gaps`]).
//! - [`EventHandler`]s react to events with retries ([`RetryPolicy`]), dead letters and
//!   idempotency ([`Idempotent`]); the same handler runs on a store ([`HandlerRunner`]), on a
//!   server's consumer group ([`GroupRunner`]), as a group of a topic on a message broker
//!   through any [`transport::Transport`] ([`TransportRunner`]) or on the in-process [`Bus`]
//!   (topic patterns, bounded queues, a recording mode for tests). Every consumer on a broker
//!   reads through a [`TransportSource`] (topic, group, retry and reconnect policies).
//! - [`metrics`]: [`FrameworkMetrics`], the Prometheus families of handlers, projections, sagas
//!   and the outbox relay, registered in the application's own registry.
//! - [`retry`]: the one [`RetryPolicy`] (exponential backoff with jitter) of every retry loop,
//!   and the rule for event store errors in long-running consumers.

mod aggregate;
pub mod bus;
mod checkpoint;
mod context;
mod decision;
mod event;
pub mod handler;
mod idempotency;
pub mod metrics;
pub mod outbox;
pub mod projection;
mod repository;
pub mod retry;
pub mod saga;
mod snapshot;
mod spans;
mod subscription;
mod upcast;

pub use aggregate::{Aggregate, SnapshotAggregate};
pub use bus::{Bus, BusMessage, BusSubscription, TopicPattern};
pub use checkpoint::{CheckpointStore, InMemoryCheckpoints, StoreCheckpoints};
pub use context::Context;
pub use decision::{Decided, Decider, Decision, DecisionError, Pending};
pub use event::{Codec, CodecError, DomainEvent, Envelope, encode_event};
pub use eventfold_client as client;
pub use eventfold_core as core;
pub use eventfold_derive::DomainEvent;
pub use eventfold_trace as trace;
pub use eventfold_transport as transport;
pub use handler::{
    DeadLetter, DeadLetters, EventHandler, GroupRunner, Handled, HandledOutcome, HandlerObserver,
    HandlerRunner, HandlerStats, Idempotent, InMemoryProcessedIds, Permanent, RunnerError,
    RunningHandler, StoreRetrying, TransportRunner, TransportSource,
};
pub use idempotency::ProcessedIds;
pub use metrics::FrameworkMetrics;
pub use outbox::{ChannelSink, OutboxRelay, RelayError, RelayOptions, Sink, WebhookSink};
pub use projection::{
    Gaps, InMemoryReadModel, MemoryProjection, ProcessorHandle, Projection, ProjectionError,
    ProjectionProcessor, ReadModel, StreamReadModel, TransportProjection,
};
pub use repository::{Executed, Loaded, MAX_ATTEMPTS_DEFAULT, Repository, RepositoryError};
pub use retry::RetryPolicy;
pub use saga::{
    Clock, CommandSender, Effects, ManualClock, Saga, SagaCommand, SagaError, SagaManager,
    SagaOptions, SagaSnapshot, SendError, SystemClock,
};
pub use snapshot::{SNAPSHOT_EVENT_TYPE, SNAPSHOT_REVISION_KEY, SnapshotPolicy};
pub use subscription::batches;
pub use upcast::{RawEvent, Upcasters};

pub mod testing;

/// An error from user code (a handler, a projection, a sink): anything that is an error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[doc(hidden)]
pub mod __private {
    /// The data of an event variant without data: `{}`.
    #[derive(Debug, serde::Serialize)]
    pub struct NoData {}
}
