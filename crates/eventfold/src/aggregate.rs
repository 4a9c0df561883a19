use crate::event::DomainEvent;

/// A consistency boundary rebuilt from its own stream of events: the state a command is decided
/// against.
///
/// The type *is* the state. It starts as [`Default`], every past event is [`apply`]'d to it in
/// order, and [`handle`] decides what a command does: the events it causes, or a domain error.
/// Both are pure (no I/O, no clock, no randomness): anything the decision needs from outside
/// belongs in the command, so a decision can be re-run on fresher state when another writer got
/// there first (see [`crate::Repository::execute`]) and tested without a store
/// ([`crate::testing::AggregateTest`]).
///
/// Each aggregate lives in the stream `{CATEGORY}-{id}`.
///
/// ```
/// use eventfold::{Aggregate, DomainEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct Added { n: u64 }
///
/// #[derive(Debug, Clone, PartialEq, DomainEvent)]
/// #[event(prefix = "counter.")]
/// enum CounterEvent { Added(Added) }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("a counter only goes up to 10")]
/// struct TooMuch;
///
/// #[derive(Default)]
/// struct Counter { value: u64 }
///
/// impl Aggregate for Counter {
///     const CATEGORY: &'static str = "counter";
///     type Event = CounterEvent;
///     type Command = u64;
///     type Error = TooMuch;
///
///     fn apply(&mut self, event: &CounterEvent) {
///         match event { CounterEvent::Added(a) => self.value += a.n }
///     }
///
///     fn handle(&self, n: u64) -> Result<Vec<CounterEvent>, TooMuch> {
///         if self.value + n > 10 { return Err(TooMuch) }
///         Ok(vec![CounterEvent::Added(Added { n })])
///     }
/// }
/// ```
///
/// [`apply`]: Aggregate::apply
/// [`handle`]: Aggregate::handle
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The first part of the aggregate's stream name, `{CATEGORY}-{id}`: a non-empty name
    /// without `-` (so `$all` can be filtered by category), e.g. `account`.
    const CATEGORY: &'static str;

    /// The events of this aggregate.
    type Event: DomainEvent;

    /// What can be asked of it: a value (often an enum), decided by [`Aggregate::handle`].
    type Command: Send;

    /// Why a command is refused (a business rule, not a technical failure).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Moves the state forward by one event. Never fails: the event already happened.
    fn apply(&mut self, event: &Self::Event);

    /// Decides a command against the current state: the events it causes (possibly none), or
    /// why it is refused. Does not change the state; the repository applies the events once
    /// they are stored.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
}

/// An aggregate whose state can be stored as a snapshot, so that loading it reads the snapshot
/// and only the events after it (see [`crate::SnapshotPolicy`]).
///
/// The state is written with serde in the repository's codec. Bump [`SNAPSHOT_VERSION`] whenever
/// the state's shape or meaning changes (a new field, a field computed differently): snapshots
/// of another version are ignored and the state is rebuilt from the events, never misread.
///
/// [`SNAPSHOT_VERSION`]: SnapshotAggregate::SNAPSHOT_VERSION
pub trait SnapshotAggregate: Aggregate + serde::Serialize + serde::de::DeserializeOwned {
    /// The version of the state's serialized form.
    const SNAPSHOT_VERSION: u32;
}
