use std::convert::Infallible;
use std::sync::Arc;

use eventfold_core::{
    EventStore, EventType, ExpectedRevision, ListStreams, NewEvent, Position, ReadStream,
    RecordedEvent, StoreError, StreamMetadata, StreamName, Timestamp,
};
use eventfold_transport::{Consumer, TransportError};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::watch;

use super::instance::{Instance, failure_trigger, timeout_trigger};
use super::timeouts::TimerIndex;
use super::{Clock, CommandSender, Effects, Saga, SagaCommand, SendError, SystemClock, command_id};
use crate::handler::delivered::Delivered;
use crate::handler::source::close;
use crate::handler::{HandlerStats, TransportSource};
use crate::metrics::FrameworkMetrics;
use crate::projection::filter_for;
use crate::retry::{RetryPolicy, StoreRetries};
use crate::{CheckpointStore, CodecError, Context, DomainEvent, StoreCheckpoints, Upcasters};

/// Event type of an instance snapshot in `saga-{name}-{instance}`.
const STATE_EVENT_TYPE: &str = "saga.state";
/// Streams listed per page when a manager starts.
const LIST_PAGE: usize = 1000;

/// How a [`SagaManager`] runs.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SagaOptions {
    /// Most events read from `$all` at once (the checkpoint is saved after each batch).
    pub batch_events_max: usize,
    /// Attempts to deliver a command whose sender answers [`SendError::Unavailable`] before it
    /// counts as failed ([`Saga::on_command_failed`]), and the delays between them. The
    /// manager waits while it retries. Default: 5 attempts.
    pub send_retry: RetryPolicy,
    /// Delays before the manager starts over from its checkpoint after a transient event store
    /// error (I/O, network), with a warning each time; when its attempts are used up the
    /// manager stops with [`SagaError::Store`]. Default: forever (see [`crate::retry`]).
    pub store_retry: RetryPolicy,
    /// How many snapshots each instance stream keeps (its max-count; at least 1).
    pub state_history: u64,
}

impl Default for SagaOptions {
    fn default() -> Self {
        SagaOptions {
            batch_events_max: 256,
            send_retry: RetryPolicy::new(5),
            store_retry: RetryPolicy::forever(),
            state_history: 16,
        }
    }
}

impl SagaOptions {
    /// Sets [`SagaOptions::send_retry`].
    pub fn send_retry(mut self, policy: RetryPolicy) -> Self {
        self.send_retry = policy;
        self
    }

    /// Sets [`SagaOptions::store_retry`].
    pub fn store_retry(mut self, policy: RetryPolicy) -> Self {
        self.store_retry = policy;
        self
    }

    /// Sets [`SagaOptions::state_history`] (at least 1).
    pub fn state_history(mut self, snapshots: u64) -> Self {
        self.state_history = snapshots.max(1);
        self
    }

    /// Sets [`SagaOptions::batch_events_max`] (at least 1).
    pub fn batch_events_max(mut self, events: usize) -> Self {
        self.batch_events_max = events.max(1);
        self
    }
}

/// Why a saga manager stopped. Transient event store errors (I/O, a remote store's network
/// errors) are retried first (see [`SagaOptions::store_retry`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// `Saga::NAME` is not usable.
    #[error(
        "saga name {name:?} is invalid: use 1..=64 bytes of letters, digits, `_` and `.` (no `-`, which separates the name from the instance in stream names)"
    )]
    InvalidName {
        /// The name.
        name: &'static str,
    },
    /// `Saga::instance_id` returned an id that makes no valid stream name.
    #[error(
        "saga {saga}: instance id {instance:?} does not fit in a stream name ({reason}); return a shorter id without control characters from Saga::instance_id"
    )]
    InvalidInstance {
        /// The saga.
        saga: &'static str,
        /// The id.
        instance: String,
        /// Why the stream name is refused.
        reason: String,
    },
    /// An event of a type the saga knows could not be decoded.
    #[error(
        "saga {saga}: cannot decode the event at position {position}: {source}; fix the event type or register an upcaster, then restart (the manager resumes at this event)"
    )]
    Decode {
        /// The saga.
        saga: &'static str,
        /// The event's position.
        position: Position,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// A stored snapshot does not fit the saga's `State`/`Command` types, or the state does
    /// not serialize as JSON.
    #[error(
        "saga {saga}: the state of instance {instance:?} cannot be {action} as JSON: {reason}; keep State and Command changes backward compatible (#[serde(default)] on new fields)"
    )]
    State {
        /// The saga.
        saga: &'static str,
        /// The instance.
        instance: String,
        /// `read` or `written`.
        action: &'static str,
        /// What serde said.
        reason: String,
    },
    /// The event store failed in a way retrying does not fix (closed, poisoned, a limit), a
    /// transient failure outlasted [`SagaOptions::store_retry`], or
    /// [`SagaManager::read_instance`] could not read.
    #[error("saga {saga}: event store error: {source}")]
    Store {
        /// The saga.
        saga: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The broker of a manager fed from a transport failed: with an error retrying cannot fix,
    /// or an outage longer than the source's reconnect policy waits. What was delivered and
    /// not acked is delivered again after a restart.
    #[error(
        "saga {saga}: the broker failed: {source}; restart the manager once it is back (what was not acked is delivered again)"
    )]
    Transport {
        /// The saga.
        saga: &'static str,
        /// The transport's error.
        #[source]
        source: TransportError,
    },
    /// Another writer appended to an instance stream: two managers run the same saga.
    #[error(
        "saga {saga}: instance {instance:?} was changed by another writer; run exactly one manager per saga"
    )]
    Concurrent {
        /// The saga.
        saga: &'static str,
        /// The instance.
        instance: String,
    },
}

/// An internal failure: stop, or retry from the checkpoint (or subscribe again).
enum Failure {
    Stop(SagaError),
    Store(StoreError),
    Transport(TransportError),
}

impl From<SagaError> for Failure {
    fn from(e: SagaError) -> Self {
        Failure::Stop(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// What is stored about one saga instance, as read by [`SagaManager::read_instance`].
#[derive(Clone, Debug, PartialEq)]
pub struct SagaSnapshot<St> {
    /// The saga's state.
    pub state: St,
    /// Pending timeouts: name and deadline, by name.
    pub timeouts: Vec<(String, Timestamp)>,
    /// Commands recorded but not yet accepted by the sender.
    pub pending_commands: usize,
    /// Whether the instance completed.
    pub completed: bool,
}

/// Where a manager's events come from.
enum Intake {
    /// `$all` of the store, from a checkpoint.
    Store,
    /// A consumer group of a topic on a broker.
    Transport(TransportSource),
}

/// Runs a [`Saga`] on an event store: reads its events from `$all` (or from a broker, see
/// [`SagaManager::from_transport`]), keeps each instance's state in the store, sends commands,
/// fires timeouts. See the [module documentation](super) for the guarantees.
pub struct SagaManager<S: Saga> {
    saga: S,
    store: Arc<dyn EventStore>,
    sender: Arc<dyn CommandSender<S::Command>>,
    intake: Intake,
    checkpoints: Arc<dyn CheckpointStore>,
    clock: Arc<dyn Clock>,
    upcasters: Upcasters,
    options: SagaOptions,
    timers: TimerIndex,
    metrics: Option<FrameworkMetrics>,
}

impl<S: Saga> std::fmt::Debug for SagaManager<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let intake = match &self.intake {
            Intake::Store => "store $all".to_owned(),
            Intake::Transport(source) => format!("{source:?}"),
        };
        f.debug_struct("SagaManager")
            .field("saga", &S::NAME)
            .field("intake", &intake)
            .field("clock", &self.clock)
            .field("options", &self.options)
            .field("pending_timeouts", &self.timers.len())
            .finish_non_exhaustive()
    }
}

type Loaded<S> = (
    Instance<<S as Saga>::State, <S as Saga>::Command>,
    Option<u64>,
);

impl<S: Saga> SagaManager<S> {
    /// A manager of `saga` on `store`, sending commands to `sender`, with its checkpoint in
    /// `store` ([`StoreCheckpoints`]), the system clock and default options.
    pub fn new(
        saga: S,
        store: Arc<dyn EventStore>,
        sender: impl CommandSender<S::Command>,
    ) -> Self {
        SagaManager {
            saga,
            intake: Intake::Store,
            checkpoints: Arc::new(StoreCheckpoints::new(store.clone())),
            store,
            sender: Arc::new(sender),
            clock: Arc::new(SystemClock),
            upcasters: Upcasters::new(),
            options: SagaOptions::default(),
            timers: TimerIndex::default(),
            metrics: None,
        }
    }

    /// A manager of `saga` that takes its events from a consumer group of a topic on a
    /// message broker (`source`: any [`Transport`](eventfold_transport::Transport), with the
    /// retry and reconnect policies) instead of `$all`; the instances' state, commands,
    /// timeouts and compensation stay in `store`, exactly as with [`SagaManager::new`].
    ///
    /// - Each delivery is acked once the instance's new state is stored and its commands were
    ///   sent. A redelivery (a crash before the ack, a publisher that published twice) is
    ///   recognised by its event id, which every instance remembers (the last 256), and acked
    ///   without reacting again: no state change and no command twice. The broker gives no
    ///   global order, so the events of one instance are handled in the order they arrive
    ///   (per stream on brokers that order per key).
    /// - An event that does not decode, or whose instance id makes no stream name, is
    ///   dead-lettered on the broker at once; an event type the saga does not read is acked.
    /// - A transient event store error closes the subscriber (what it had not acked comes
    ///   back) and starts over after [`SagaOptions::store_retry`]'s delays, as on a store; an
    ///   unavailable broker is subscribed again after the source's reconnect delays, then the
    ///   manager stops with [`SagaError::Transport`].
    /// - Timeouts are read from the store on start and fire from the [`Clock`], whatever the
    ///   intake. Run one manager per saga, as with a store.
    pub fn from_transport(
        saga: S,
        store: Arc<dyn EventStore>,
        sender: impl CommandSender<S::Command>,
        source: TransportSource,
    ) -> Self {
        let mut manager = SagaManager::new(saga, store, sender);
        manager.intake = Intake::Transport(source);
        manager
    }

    /// Keeps the checkpoint (name `saga-{NAME}`) in `checkpoints` instead (a manager fed from
    /// `$all`; one fed from a broker has no checkpoint: the broker's group keeps its place).
    pub fn with_checkpoints(mut self, checkpoints: Arc<dyn CheckpointStore>) -> Self {
        self.checkpoints = checkpoints;
        self
    }

    /// Takes the time from `clock` (a [`super::ManualClock`] in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Decodes events through `upcasters`.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Sets the options.
    pub fn with_options(mut self, options: SagaOptions) -> Self {
        self.options = options;
        self
    }

    /// Counts into `metrics` the events the saga handled and failed on by type and each step's
    /// time (consumer `saga-{NAME}`), the timeouts fired and those pending (saga `NAME`).
    pub fn with_metrics(mut self, metrics: FrameworkMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The name of the manager's checkpoint: `saga-{NAME}`.
    pub fn checkpoint_name() -> String {
        format!("saga-{}", S::NAME)
    }

    /// Runs until an error it cannot retry. First it recovers: it lists the saga's instances,
    /// sends the commands a previous run recorded but did not deliver, and loads every pending
    /// timeout (firing those already due). Then it handles events from its checkpoint on.
    /// Stop it by dropping (aborting) the task: any moment is safe, at the price of sending
    /// some commands again (at least once).
    pub async fn run(mut self) -> Result<Infallible, SagaError> {
        check_name(S::NAME)?;
        let mut retries = StoreRetries::default();
        let mut outages = 0u32;
        loop {
            let mut progressed = false;
            let (delay, error) = match self.run_once(&mut progressed).await {
                Err(Failure::Stop(e)) => return Err(e),
                Err(Failure::Store(source)) => (
                    retries.next_delay(&self.options.store_retry, &source, progressed),
                    SagaError::Store {
                        saga: S::NAME,
                        source,
                    },
                ),
                Err(Failure::Transport(source)) => {
                    outages = if progressed {
                        1
                    } else {
                        outages.saturating_add(1)
                    };
                    let delay = match &self.intake {
                        Intake::Transport(t) if source.is_retryable() => t.reconnect_after(outages),
                        _ => None,
                    };
                    (
                        delay,
                        SagaError::Transport {
                            saga: S::NAME,
                            source,
                        },
                    )
                }
            };
            let Some(delay) = delay else {
                return Err(error);
            };
            tracing::warn!(
                %error,
                retry_in = ?delay,
                "saga manager: starting over (from the checkpoint, or subscribing again)"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// The stored state of `instance`, `None` when it has none.
    pub async fn read_instance(
        store: &dyn EventStore,
        instance: &str,
    ) -> Result<Option<SagaSnapshot<S::State>>, SagaError> {
        let loaded = load::<S>(store, instance).await.map_err(|f| match f {
            Failure::Stop(e) => e,
            Failure::Store(source) => SagaError::Store {
                saga: S::NAME,
                source,
            },
            Failure::Transport(source) => SagaError::Transport {
                saga: S::NAME,
                source,
            },
        })?;
        Ok(loaded.1.map(|_| {
            let inst = loaded.0;
            SagaSnapshot {
                timeouts: inst
                    .timeouts
                    .iter()
                    .map(|(n, at)| (n.clone(), Timestamp(*at)))
                    .collect(),
                pending_commands: inst.pending.len(),
                completed: inst.completed,
                state: inst.state,
            }
        }))
    }

    async fn run_once(&mut self, progressed: &mut bool) -> Result<Infallible, Failure> {
        self.recover().await?;
        if let Intake::Transport(source) = &self.intake {
            let source = source.clone();
            let mut consumer = source.open().await.map_err(Failure::Transport)?;
            let Err(failure) = self.consume(&source, &mut consumer, progressed).await;
            close(consumer, S::NAME).await;
            return Err(failure);
        }
        let checkpoint = Self::checkpoint_name();
        let after = self.checkpoints.load(&checkpoint).await?;
        let mut batches = crate::batches(
            &*self.store,
            after,
            filter_for::<S::Event>(),
            self.options.batch_events_max,
        );
        loop {
            self.fire_due().await?;
            let next = tokio::select! {
                next = batches.next() => next,
                () = self.next_timeout() => continue,
            };
            let events = match next {
                Some(Ok(events)) => events,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(StoreError::Closed.into()),
            };
            let Some(last) = events.last().map(|e| e.position) else {
                continue;
            };
            for event in events {
                self.handle_event(event, false).await?;
            }
            self.checkpoints.save(&checkpoint, last).await?;
            *progressed = true;
        }
    }

    /// Resolves when the earliest pending timeout is due (never when none is pending).
    fn next_timeout(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let deadline = self.timers.next_deadline();
        let clock = self.clock.clone();
        async move {
            match deadline {
                Some(at) => clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        }
    }

    /// Handles the deliveries of `consumer` as they come and fires timeouts as they fall due,
    /// until a failure. A delivery is settled once its event is handled; waiting for the
    /// next one is never abandoned for a timeout (a receive cut short could leave a message
    /// to come back only after the ack timeout).
    async fn consume(
        &mut self,
        source: &TransportSource,
        consumer: &mut Consumer,
        progressed: &mut bool,
    ) -> Result<Infallible, Failure> {
        // The manager's counts are in its logs; settling reports into this.
        let stats = watch::Sender::new(HandlerStats::default());
        loop {
            self.fire_due().await?;
            let delivery = {
                let mut next = std::pin::pin!(consumer.next());
                loop {
                    tokio::select! {
                        d = &mut next => break d.map_err(Failure::Transport)?,
                        () = self.next_timeout() => self.fire_due().await?,
                    }
                }
            };
            let delivered = self.handle_delivered(delivery.event.clone()).await?;
            source
                .settle(consumer, delivery, delivered, S::NAME, &stats)
                .await
                .map_err(Failure::Transport)?;
            *progressed = true;
        }
    }

    /// Handles one event from a broker: what to tell the broker, or a failure that stops or
    /// restarts the manager.
    async fn handle_delivered(&mut self, recorded: RecordedEvent) -> Result<Delivered, Failure> {
        if !S::Event::knows(recorded.event_type.as_str()) {
            return Ok(Delivered::Foreign);
        }
        match self.handle_event(recorded, true).await {
            Ok(()) => Ok(Delivered::Handled),
            Err(Failure::Stop(SagaError::Decode { source, .. })) => Ok(Delivered::Failed {
                permanent: true,
                reason: format!(
                    "saga {}: cannot decode the event: {source}; register an upcaster, then replay the dead letter",
                    S::NAME
                ),
            }),
            Err(Failure::Stop(e @ SagaError::InvalidInstance { .. })) => Ok(Delivered::Failed {
                permanent: true,
                reason: e.to_string(),
            }),
            Err(failure) => Err(failure),
        }
    }

    /// Rebuilds the timer index from the stored instances and delivers what a previous run
    /// left undelivered.
    async fn recover(&mut self) -> Result<(), Failure> {
        self.timers = TimerIndex::default();
        let prefix = format!("saga-{}-", S::NAME);
        let mut after = None;
        loop {
            let page = self
                .store
                .list_streams(ListStreams {
                    prefix: Some(prefix.clone()),
                    after: after.take(),
                    limit: LIST_PAGE,
                })
                .await?;
            for stream in page.streams {
                let Some(instance) = stream.as_str().strip_prefix(&prefix) else {
                    continue;
                };
                let (mut inst, mut revision) = load::<S>(&*self.store, instance).await?;
                if !inst.pending.is_empty() {
                    tracing::info!(
                        saga = S::NAME,
                        instance,
                        commands = inst.pending.len(),
                        "saga manager: sending commands recorded before the restart"
                    );
                    self.settle(instance, &mut inst, &mut revision).await?;
                }
                self.timers.set(instance, &inst.timeouts);
            }
            match page.next {
                Some(next) => after = Some(next.as_str().to_owned()),
                None => {
                    self.count_pending();
                    return Ok(());
                }
            }
        }
    }

    /// Handles one event; `by_id`: recognise events handled before by their id (from a
    /// broker) rather than by their `$all` position.
    async fn handle_event(&mut self, recorded: RecordedEvent, by_id: bool) -> Result<(), Failure> {
        let consumer = format!("saga-{}", S::NAME);
        let span = crate::spans::process(
            &consumer,
            &recorded.id,
            &recorded.stream,
            &recorded.metadata,
        );
        let measured = self
            .metrics
            .as_ref()
            .map(|_| (tokio::time::Instant::now(), recorded.event_type.clone()));
        let r = span
            .instrument(self.handle_event_in_span(recorded, by_id))
            .await;
        if r.is_err() {
            span.fail("saga_failed", "the saga step failed");
        }
        if let (Some(m), Some((started, event_type))) = (&self.metrics, measured) {
            m.count(&consumer, r.is_err(), [event_type.as_str()]);
            m.observe(&consumer, r.is_err(), started.elapsed());
        }
        self.count_pending();
        r
    }

    /// Brings the pending timeouts gauge up to date.
    fn count_pending(&self) {
        if let Some(m) = &self.metrics {
            m.saga_timeouts_pending(S::NAME, self.timers.len());
        }
    }

    async fn handle_event_in_span(
        &mut self,
        recorded: RecordedEvent,
        by_id: bool,
    ) -> Result<(), Failure> {
        let position = recorded.position;
        let envelope = self
            .upcasters
            .decode::<S::Event>(recorded)
            .map_err(|source| SagaError::Decode {
                saga: S::NAME,
                position,
                source,
            })?;
        let Some(instance) = self.saga.instance_id(&envelope) else {
            return Ok(());
        };
        let (mut inst, mut revision) = load::<S>(&*self.store, &instance).await?;
        let handled = if by_id {
            inst.handled(envelope.id)
        } else {
            inst.last_position.is_some_and(|p| p >= position)
        };
        if handled {
            tracing::debug!(saga = S::NAME, %instance, position = position.0, id = %envelope.id, "already handled");
            return Ok(());
        }
        if inst.completed {
            tracing::debug!(saga = S::NAME, %instance, "event for a completed instance ignored");
            return Ok(());
        }
        let before = to_json::<S, _>(&instance, &inst.state)?;
        let mut effects = Effects::new(self.clock.now());
        self.saga.react(&mut inst.state, &envelope, &mut effects);
        let unchanged = effects.is_empty() && to_json::<S, _>(&instance, &inst.state)? == before;
        // From a broker, an existing instance remembers even an event that changed nothing:
        // redelivered after later events changed the state, it could otherwise act late.
        if unchanged && !(by_id && revision.is_some()) {
            return Ok(());
        }
        if !by_id {
            inst.last_position = Some(position);
        }
        inst.remember(envelope.id);
        let trigger = envelope.id.to_string();
        inst.apply(S::NAME, &instance, &trigger, &envelope.context(), effects);
        save::<S>(&*self.store, &self.options, &instance, &inst, &mut revision).await?;
        self.settle(&instance, &mut inst, &mut revision).await?;
        self.timers.set(&instance, &inst.timeouts);
        Ok(())
    }

    /// Fires every timeout due now, earliest first.
    async fn fire_due(&mut self) -> Result<(), Failure> {
        let now = self.clock.now();
        while let Some(instance) = self.timers.next_due(now) {
            let (mut inst, mut revision) = load::<S>(&*self.store, &instance).await?;
            if let Some((name, deadline)) = inst.due_timeout(now) {
                inst.timeouts.remove(&name);
                let trigger = timeout_trigger(&name, deadline);
                let cause = command_id(S::NAME, &instance, &trigger, usize::MAX);
                tracing::info!(saga = S::NAME, %instance, timeout = %name, "saga timeout fired");
                if let Some(m) = &self.metrics {
                    m.saga_timeout_fired(S::NAME);
                }
                // The timeout continues the trace of the step that scheduled it (stored in the
                // snapshot, so a restart in between does not lose it).
                let span = crate::spans::timeout(
                    &format!("saga-{}", S::NAME),
                    &instance,
                    &name,
                    inst.last_trace().as_ref(),
                );
                let r = span
                    .instrument(async {
                        let context = inst.context_for(&cause.to_string());
                        let mut effects = Effects::new(now);
                        self.saga.on_timeout(&mut inst.state, &name, &mut effects);
                        inst.apply(S::NAME, &instance, &trigger, &context, effects);
                        save::<S>(&*self.store, &self.options, &instance, &inst, &mut revision)
                            .await?;
                        self.settle(&instance, &mut inst, &mut revision).await
                    })
                    .await;
                if r.is_err() {
                    span.fail("saga_failed", "the saga timeout failed");
                }
                r?;
            }
            self.timers.set(&instance, &inst.timeouts);
        }
        self.count_pending();
        Ok(())
    }

    /// Delivers the instance's pending commands in order; a command that fails for good runs
    /// the saga's compensation, whose commands are stored, then delivered too. Stores the
    /// instance with nothing pending at the end.
    async fn settle(
        &self,
        instance: &str,
        inst: &mut Instance<S::State, S::Command>,
        revision: &mut Option<u64>,
    ) -> Result<(), Failure> {
        let mut unsaved = false;
        while !inst.pending.is_empty() {
            let pending = inst.pending.remove(0);
            let command = pending.to_command(S::NAME, instance);
            unsaved = true;
            let Err(reason) = self.deliver(&command).await else {
                continue;
            };
            tracing::warn!(
                saga = S::NAME,
                instance,
                command = ?command.command,
                %reason,
                "saga command failed; running the saga's compensation"
            );
            let context = Context {
                correlation_id: pending.correlation_id,
                causation_id: command.id.to_string(),
                user_id: pending.user_id,
                trace: eventfold_trace::continued_context(
                    pending
                        .trace
                        .as_ref()
                        .and_then(super::instance::StoredTrace::context),
                ),
            };
            let mut effects = Effects::new(self.clock.now());
            self.saga
                .on_command_failed(&mut inst.state, &command.command, &reason, &mut effects);
            inst.apply(
                S::NAME,
                instance,
                &failure_trigger(command.id),
                &context,
                effects,
            );
            // The compensation is stored before any of it is sent.
            save::<S>(&*self.store, &self.options, instance, inst, revision).await?;
            unsaved = false;
        }
        if unsaved {
            save::<S>(&*self.store, &self.options, instance, inst, revision).await?;
        }
        Ok(())
    }

    /// Sends one command, retrying while the receiver is unavailable. `Err` with the reason
    /// when it failed for good.
    async fn deliver(&self, command: &SagaCommand<S::Command>) -> Result<(), String> {
        let (attempts, result) = self
            .options
            .send_retry
            .run(
                || self.sender.send(command),
                |e| matches!(e, SendError::Unavailable(_)),
                |attempt, error, delay| {
                    tracing::warn!(
                        saga = S::NAME,
                        instance = %command.instance,
                        attempt,
                        %error,
                        retry_in = ?delay,
                        "saga command not delivered; retrying"
                    );
                },
            )
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(SendError::Rejected(reason)) => Err(reason),
            Err(SendError::Unavailable(e)) => {
                Err(format!("not delivered after {attempts} attempts: {e}"))
            }
        }
    }
}

fn check_name(name: &'static str) -> Result<(), SagaError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(SagaError::InvalidName { name })
    }
}

fn instance_stream<S: Saga>(instance: &str) -> Result<StreamName, SagaError> {
    StreamName::new(format!("saga-{}-{instance}", S::NAME)).map_err(|e| {
        SagaError::InvalidInstance {
            saga: S::NAME,
            instance: instance.to_owned(),
            reason: e.to_string(),
        }
    })
}

fn to_json<S: Saga, T: Serialize>(
    instance: &str,
    value: &T,
) -> Result<serde_json::Value, SagaError> {
    serde_json::to_value(value).map_err(|e| SagaError::State {
        saga: S::NAME,
        instance: instance.to_owned(),
        action: "written",
        reason: e.to_string(),
    })
}

/// The instance's latest snapshot and its revision (`None`: no stream yet, a new instance).
async fn load<S: Saga>(store: &dyn EventStore, instance: &str) -> Result<Loaded<S>, Failure> {
    let stream = instance_stream::<S>(instance)?;
    let slice = match store.read_stream(&stream, ReadStream::backward(1)).await {
        Ok(slice) => slice,
        Err(StoreError::StreamNotFound { .. }) => return Ok((Instance::default(), None)),
        Err(e) => return Err(e.into()),
    };
    let Some(event) = slice.events.into_iter().next() else {
        return Ok((Instance::default(), None));
    };
    let inst = serde_json::from_slice(&event.data).map_err(|e| SagaError::State {
        saga: S::NAME,
        instance: instance.to_owned(),
        action: "read",
        reason: e.to_string(),
    })?;
    Ok((inst, Some(event.revision.0)))
}

/// Appends a snapshot of `inst`, expecting the stream at `revision`; moves `revision` on.
async fn save<S: Saga>(
    store: &dyn EventStore,
    options: &SagaOptions,
    instance: &str,
    inst: &Instance<S::State, S::Command>,
    revision: &mut Option<u64>,
) -> Result<(), Failure> {
    let stream = instance_stream::<S>(instance)?;
    let data = to_json::<S, _>(instance, inst)?;
    let event = NewEvent::json(
        EventType::new(STATE_EVENT_TYPE).expect("a valid constant event type"),
        &data,
    );
    let expected = match *revision {
        Some(r) => ExpectedRevision::Exact(r),
        None => ExpectedRevision::NoStream,
    };
    let result = match store.append(&stream, expected, vec![event]).await {
        Ok(result) => result,
        Err(StoreError::WrongExpectedRevision { .. }) => {
            return Err(SagaError::Concurrent {
                saga: S::NAME,
                instance: instance.to_owned(),
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    if revision.is_none() {
        let metadata = StreamMetadata {
            max_count: Some(options.state_history.max(1)),
            ..StreamMetadata::default()
        };
        store.set_metadata(&stream, metadata).await?;
    }
    *revision = Some(result.last_revision.0);
    Ok(())
}
