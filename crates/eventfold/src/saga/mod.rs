//! Sagas (process managers): long-running processes that react to events by sending commands,
//! wait for answers with durable timeouts, and compensate when a step fails.
//!
//! # The design
//!
//! A saga is a [`Saga`]: a plain value with no I/O. For each event it reacts to, it names the
//! saga *instance* the event belongs to ([`Saga::instance_id`], e.g. the registration id) and,
//! given that instance's state, decides what to do ([`Saga::react`]) by recording *effects* on
//! an [`Effects`] value: send a command, schedule or cancel a named timeout, complete. A due
//! timeout calls [`Saga::on_timeout`]; a command the receiver refused (or that could not be
//! delivered within the configured attempts) calls [`Saga::on_command_failed`]; failure events
//! (`LeagueAssignmentFailed`) are ordinary events for [`Saga::react`]. Compensation is nothing
//! special: those three hooks send compensating commands like any others.
//!
//! Keeping the decisions pure makes a saga testable without a store or a clock
//! ([`crate::testing::SagaHarness`]), and lets the [`SagaManager`] own every durability rule:
//!
//! - It reads `$all` (filtered to the saga's event types) through [`crate::batches`] from a
//!   [`crate::CheckpointStore`] checkpoint, so it catches up after downtime, then runs live.
//!   Or, made with [`SagaManager::from_transport`], it consumes a topic of a message broker as
//!   a consumer group (the group keeps its place) and acks each event once the instance's new
//!   state is stored and its commands were sent; everything below holds for both intakes.
//! - Each instance's state lives in the event store, stream `saga-{name}-{instance}`: every
//!   change appends a `saga.state` snapshot (state, timeouts with absolute deadlines, commands
//!   not yet delivered, the last handled position), and the stream keeps only the last
//!   [`SagaOptions::state_history`] of them.
//! - Commands are written into that snapshot *before* they are sent, and cleared by the next
//!   snapshot once the [`CommandSender`] accepted them. A crash in between sends them again
//!   after the restart: delivery is **at least once**. Every command carries an id derived from
//!   the saga, the instance, the trigger (event id, timeout, failed command) and its place among
//!   the effects, so a receiver can drop duplicates by id; a restart never makes new ids for old
//!   work. An event already handled by an instance (its position is at or below the instance's
//!   last handled position) is skipped, so replaying after a lost checkpoint sends nothing twice
//!   beyond that window. From a broker, which has no global order, an instance recognises a
//!   redelivered event by its id instead (it remembers the last 256 it handled), so a
//!   redelivery changes no state and sends no command.
//! - Timeouts are durable: their deadlines are in the snapshots, and on start the manager lists
//!   the saga's instances, so a deadline that passed while the process was down fires right
//!   after the restart. Time comes from a [`Clock`] ([`ManualClock`] in tests).
//! - Every command sent carries a [`crate::Context`] derived from its trigger (the event's
//!   correlation id, the event as the cause), so correlation and causation ids flow through
//!   the process without the saga writing them. Its trace continues the step's span; the
//!   snapshot keeps the last step's W3C context, so a timeout (a `timeout saga-{name}` span)
//!   or a command resent after a restart continues the same trace.
//!
//! Costs and limits: one manager handles one trigger at a time (events in `$all` order, or
//! in delivery order from a broker; timeouts as they fall due), and while it retries an
//! unavailable receiver everything else waits. Fed from a broker, an event for an existing
//! instance is stored even when it changed nothing (to remember its id), and aborting the
//! manager is a crash for the broker: what it had received and not acked comes back after
//! the ack timeout. Each handled event costs one read of the instance's snapshot and, when the saga did
//! something, one append (two when commands were sent). Completed instances keep their last
//! snapshot, so a late event is recognised as belonging to a finished process; a manager's
//! start reads one snapshot per instance the saga ever started.
//!
//! One manager per saga name at a time: snapshots are appended with an expected revision, so a
//! second manager running the same saga stops with [`SagaError::Concurrent`] instead of
//! corrupting state.

pub(crate) mod clock;
pub(crate) mod instance;
mod manager;
mod timeouts;

use std::time::Duration;

use eventfold_core::{EventId, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use clock::{Clock, ManualClock, SystemClock};
pub(crate) use instance::Instance;
pub use manager::{SagaError, SagaManager, SagaOptions, SagaSnapshot};

use crate::{BoxError, Context, DomainEvent, Envelope};

/// A saga (process manager): decides, per instance, what to do about each event, timeout and
/// failed command. See the [module documentation](self) for how it is run.
pub trait Saga: Send + Sync + 'static {
    /// The saga's name: 1..=64 bytes of `[A-Za-z0-9_.]` (no `-`: it separates the name from
    /// the instance in stream names). Names its state streams and its checkpoint.
    const NAME: &'static str;

    /// The events it reacts to; the manager reads only these event types.
    type Event: DomainEvent;

    /// The state of one instance; a new instance starts from `Default`.
    type State: Default + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The commands it sends.
    type Command: Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static;

    /// The instance `event` belongs to (a registration id, an order id), `None` when the saga
    /// does not care about this event. It becomes part of a stream name, so keep it short
    /// (the whole name is at most 256 bytes).
    fn instance_id(&self, event: &Envelope<Self::Event>) -> Option<String>;

    /// Reacts to an event of the instance: updates `state`, records effects.
    fn react(
        &self,
        state: &mut Self::State,
        event: &Envelope<Self::Event>,
        effects: &mut Effects<Self::Command>,
    );

    /// The timeout `name` of the instance is due. By default: nothing.
    fn on_timeout(
        &self,
        state: &mut Self::State,
        name: &str,
        effects: &mut Effects<Self::Command>,
    ) {
        let _ = (state, name, effects);
    }

    /// `command` failed for good: the receiver refused it ([`SendError::Rejected`]) or it could
    /// not be delivered within [`SagaOptions::send_retry`]. Record compensating commands
    /// here. By default: nothing (the manager logs every failure).
    fn on_command_failed(
        &self,
        state: &mut Self::State,
        command: &Self::Command,
        reason: &str,
        effects: &mut Effects<Self::Command>,
    ) {
        let _ = (state, command, reason, effects);
    }
}

/// What a saga decided while handling one event, timeout or failure: commands to send,
/// timeouts to schedule or cancel, whether the instance is complete. Applied in the order
/// recorded.
#[derive(Debug)]
pub struct Effects<C> {
    now: Timestamp,
    pub(crate) commands: Vec<C>,
    pub(crate) timers: Vec<TimerChange>,
    pub(crate) complete: bool,
}

/// A change to an instance's timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TimerChange {
    Schedule(String, Timestamp),
    Cancel(String),
}

impl<C> Effects<C> {
    /// No effects, at time `now`.
    pub(crate) fn new(now: Timestamp) -> Self {
        Effects {
            now,
            commands: Vec::new(),
            timers: Vec::new(),
            complete: false,
        }
    }

    /// The time the manager's clock read when it started handling the trigger.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Sends `command` (after the new state is stored).
    pub fn send(&mut self, command: C) -> &mut Self {
        self.commands.push(command);
        self
    }

    /// Schedules the timeout `name` to fire `after` from now; replaces a pending timeout of the
    /// same name.
    pub fn schedule(&mut self, name: impl Into<String>, after: Duration) -> &mut Self {
        let at = Timestamp(self.now.0.saturating_add(clock::micros(after)));
        self.schedule_at(name, at)
    }

    /// Schedules the timeout `name` to fire at `deadline`; replaces a pending timeout of the
    /// same name.
    pub fn schedule_at(&mut self, name: impl Into<String>, deadline: Timestamp) -> &mut Self {
        self.timers
            .push(TimerChange::Schedule(name.into(), deadline));
        self
    }

    /// Cancels the timeout `name` (nothing when none is pending).
    pub fn cancel(&mut self, name: impl Into<String>) -> &mut Self {
        self.timers.push(TimerChange::Cancel(name.into()));
        self
    }

    /// Completes the instance: its pending timeouts are dropped and later events for it are
    /// ignored. Commands recorded with it are still sent.
    pub fn complete(&mut self) -> &mut Self {
        self.complete = true;
        self
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.timers.is_empty() && !self.complete
    }
}

/// A command a saga sends, with everything a receiver needs to process it once.
#[derive(Clone, Debug, PartialEq)]
pub struct SagaCommand<C> {
    /// A deterministic id (the same after a restart): receivers drop a command whose id they
    /// already processed, since delivery is at least once. Use it as the id of the event the
    /// command produces and the store drops the retry for you (an idempotent append).
    pub id: EventId,
    /// The saga that sent it.
    pub saga: &'static str,
    /// The instance that sent it.
    pub instance: String,
    /// The command.
    pub command: C,
    /// The correlation id of the process and the id of what caused the command; stamp it on
    /// the events the command produces ([`crate::encode_event`]).
    pub context: Context,
}

/// Where a saga's commands go: the application's command handlers, a bus, another service.
#[async_trait::async_trait]
pub trait CommandSender<C>: Send + Sync + 'static {
    /// Delivers `command`. `Ok` means the receiver accepted it (it will not be sent again
    /// unless the manager crashes before recording that).
    async fn send(&self, command: &SagaCommand<C>) -> Result<(), SendError>;
}

#[async_trait::async_trait]
impl<C, T> CommandSender<C> for std::sync::Arc<T>
where
    C: Sync + 'static,
    T: CommandSender<C> + ?Sized,
{
    async fn send(&self, command: &SagaCommand<C>) -> Result<(), SendError> {
        (**self).send(command).await
    }
}

/// Why a command was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The receiver refused the command for good (a business rule): the saga's
    /// [`Saga::on_command_failed`] runs at once, without retries.
    #[error("the command was rejected: {0}")]
    Rejected(String),
    /// The command could not be delivered now (a network error, a busy service): the manager
    /// retries per [`SagaOptions::send_retry`].
    #[error("the command could not be delivered: {0}")]
    Unavailable(#[source] BoxError),
}

/// A deterministic id for the `index`-th command caused by `trigger` in an instance: a UUIDv8
/// from an FNV-1a 128-bit hash of the parts (stable across releases and restarts).
pub(crate) fn command_id(saga: &str, instance: &str, trigger: &str, index: usize) -> EventId {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    let index = index.to_string();
    for part in [saga, instance, trigger, index.as_str()] {
        for &b in part.as_bytes().iter().chain(&[0xff]) {
            h ^= u128::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    EventId::from_uuid(uuid::Builder::from_custom_bytes(h.to_be_bytes()).into_uuid())
}
