//! The relay: from any [`EventStore`] to any broker [`Transport`].
//!
//! A [`Relay`] follows `$all` (optionally filtered by an [`EventFilter`]) and publishes the events
//! to one topic in bounded batches, each event encoded by [`eventfold_transport::wire::encode`]
//! (its `ce_id`, the event id, is the broker's de-duplication id where the broker has one; the
//! message key is `metadata.partition_key` when a non-empty string, else the stream, so
//! per-key order holds on brokers that keep order per key: the key a consumer group pinned by
//! `{"metadata": "partition_key"}` keeps in order too).
//!
//! - **At least once, in order.** A batch is published, the broker confirms it, and only then is
//!   the checkpoint (the next `$all` position to publish) appended to the relay's checkpoint
//!   stream `relay-checkpoint-{name}` in the same store (max-count [`CHECKPOINT_KEEP`], so it
//!   does not grow). A relay that stops or crashes between the two publishes those events again
//!   after its restart: consumers de-duplicate by `ce_id`. Nothing is skipped and nothing is
//!   published out of `$all` order.
//! - **Retries.** A retryable broker error ([`TransportError::is_retryable`]) or a transient store
//!   error (`Storage`, `Backend`, `Unavailable`) is retried with capped exponential backoff (the
//!   same batch again, or the subscription again from the position after the last confirmed
//!   batch), logged once per streak of failures; any other error stops the relay with it.
//! - **Its own events are never relayed.** Checkpoint events (type [`CHECKPOINT_EVENT_TYPE`] in
//!   a stream starting with [`CHECKPOINT_STREAM_PREFIX`], of any relay) are skipped.
//! - **A clean stop.** The shutdown future given to [`Relay::run`] is heeded while waiting for
//!   events and during backoff delays, never between a publish and its checkpoint, so a clean
//!   stop republishes nothing.
//! - **Progress.** [`Relay::progress`] is a `watch` of [`RelayProgress`]: state, events and
//!   batches published, broker errors and backoff delays, the next position, the last
//!   checkpoint, the lag behind the log's end.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{
    EventFilter, EventId, EventStore, EventSubscription, EventType, ExpectedRevision, NewEvent,
    Position, ReadAll, ReadStream, RecordedEvent, StoreError, StreamMetadata, StreamName,
    SubscribeFrom,
};
use eventfold_transport::{Message, Topic, Transport, TransportError, wire};
use futures::future::Shared;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// Most events in one publish.
pub const BATCH_EVENTS_MAX: usize = 500;
/// Most bytes (payloads, headers and keys) in one publish; a single larger event goes alone.
pub const BATCH_BYTES_MAX: usize = 1 << 20;
/// The checkpoint stream of the relay `name` is this prefix followed by `name`.
pub const CHECKPOINT_STREAM_PREFIX: &str = "relay-checkpoint-";
/// The event type of checkpoint events: `{"position": N}`, the next `$all` position to publish.
pub const CHECKPOINT_EVENT_TYPE: &str = "relay.checkpoint";
/// How many checkpoint events the checkpoint stream keeps (its max-count metadata).
pub const CHECKPOINT_KEEP: u64 = 4;
/// Longest relay name, in bytes.
pub const RELAY_NAME_BYTES_MAX: usize = 100;
/// How often at most the lag is measured (one read of the log's last event).
pub const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// Why a relay could not be built or stopped. Each message carries its cause (so no
/// `source()`: printing the chain would repeat it).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A setting that cannot be used; the message says what to do instead.
    #[error("{0}")]
    Invalid(String),
    /// The store failed in a way retrying will not fix.
    #[error("the relay stopped: the store failed while {doing}: {error}")]
    Store {
        /// What the relay was doing.
        doing: &'static str,
        /// The store's error.
        error: StoreError,
    },
    /// The broker refused in a way retrying will not fix.
    #[error(
        "the relay stopped: the broker refused a publish: {0}; fix the cause and restart the relay (it resumes from its checkpoint)"
    )]
    Transport(TransportError),
    /// The checkpoint stream holds something that is not a relay checkpoint.
    #[error(
        "the relay's checkpoint stream {stream} is unusable ({detail}); delete that stream to relay everything again from the start, or fix its last event"
    )]
    Checkpoint {
        /// The checkpoint stream.
        stream: String,
        /// What is wrong.
        detail: String,
    },
    /// Retryable failures went on longer than [`RetryPolicy::max_attempts`].
    #[error(
        "the relay gave up after {attempts} failed attempts in a row; the last: {last}; restart it once the broker and store are reachable (it resumes from its checkpoint)"
    )]
    GaveUp {
        /// Failed attempts in a row.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

/// Whether a store error may go away by itself (the framework's rule for consumers).
pub fn is_transient(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Storage { .. } | StoreError::Backend { .. } | StoreError::Unavailable { .. }
    )
}

/// Delays between attempts after retryable failures: `initial`, doubled each time, at most
/// `max`; after `max_attempts` failures in a row (when set) the relay stops with
/// [`RelayError::GaveUp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Failed attempts in a row before giving up; `None`: never give up.
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    /// The delay after the `attempt`-th failure in a row (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(20);
        self.initial
            .saturating_mul(1u32 << shift)
            .min(self.max)
            .max(Duration::from_millis(1))
    }
}

/// A relay's name: 1 to [`RELAY_NAME_BYTES_MAX`] bytes of ASCII letters, digits, `_`, `.`, `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelayName(String);

impl RelayName {
    /// Checks `name`.
    pub fn new(name: impl Into<String>) -> Result<RelayName, RelayError> {
        let name = name.into();
        if name.is_empty()
            || name.len() > RELAY_NAME_BYTES_MAX
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(RelayError::Invalid(format!(
                "relay name {name:?} is not usable: use 1 to {RELAY_NAME_BYTES_MAX} ASCII letters, digits, `_`, `.` or `-`"
            )));
        }
        Ok(RelayName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stream holding this relay's checkpoints.
    pub fn checkpoint_stream(&self) -> StreamName {
        StreamName::new(format!("{CHECKPOINT_STREAM_PREFIX}{}", self.0))
            .expect("a checked relay name makes a valid stream name")
    }
}

impl std::fmt::Display for RelayName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a relay relays, where to, and how.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Its name: the checkpoint stream is `relay-checkpoint-{name}`.
    pub name: RelayName,
    /// The topic every event is published to.
    pub topic: Topic,
    /// Which events of `$all` (default: all).
    pub filter: EventFilter,
    /// Most events per publish, `1..=`[`BATCH_EVENTS_MAX`].
    pub batch_events_max: usize,
    /// Most bytes per publish, `1..=`[`BATCH_BYTES_MAX`].
    pub batch_bytes_max: usize,
    /// Backoff after retryable failures.
    pub retry: RetryPolicy,
}

impl RelayConfig {
    /// Relays everything to `topic`, with the largest batches and the default retries.
    pub fn new(name: RelayName, topic: Topic) -> RelayConfig {
        RelayConfig {
            name,
            topic,
            filter: EventFilter::default(),
            batch_events_max: BATCH_EVENTS_MAX,
            batch_bytes_max: BATCH_BYTES_MAX,
            retry: RetryPolicy::default(),
        }
    }

    /// Relays only the events passing `filter`.
    pub fn filter(mut self, filter: EventFilter) -> RelayConfig {
        self.filter = filter;
        self
    }

    fn validate(&self) -> Result<(), RelayError> {
        if !(1..=BATCH_EVENTS_MAX).contains(&self.batch_events_max) {
            return Err(RelayError::Invalid(format!(
                "batch_events_max {} is not in 1..={BATCH_EVENTS_MAX}",
                self.batch_events_max
            )));
        }
        if !(1..=BATCH_BYTES_MAX).contains(&self.batch_bytes_max) {
            return Err(RelayError::Invalid(format!(
                "batch_bytes_max {} is not in 1..={BATCH_BYTES_MAX}",
                self.batch_bytes_max
            )));
        }
        if self.retry.initial.is_zero() || self.retry.max < self.retry.initial {
            return Err(RelayError::Invalid(
                "retry: initial must be above zero and max at least initial".into(),
            ));
        }
        if self.retry.max_attempts == Some(0) {
            return Err(RelayError::Invalid(
                "retry.max_attempts must be at least 1 (or None: retry forever)".into(),
            ));
        }
        Ok(())
    }
}

/// What a relay is doing.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum RelayState {
    /// Reading its checkpoint.
    #[default]
    Starting,
    /// Publishing, or waiting for new events.
    Running,
    /// Waiting to try again after a retryable failure.
    Retrying {
        /// Failed attempts in a row.
        attempts: u32,
        /// The last failure.
        error: String,
    },
    /// Stopped by its shutdown signal.
    Stopped,
    /// Stopped by an error (the one `run` returned).
    Failed(String),
}

/// A relay's progress, for a CLI or metrics.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RelayProgress {
    /// What it is doing.
    pub state: RelayState,
    /// Events the broker confirmed since this relay started (republished ones included).
    pub published: u64,
    /// Publishes the broker confirmed since this relay started.
    pub batches: u64,
    /// Publishes the broker failed or refused since this relay started (each attempt).
    pub broker_errors: u64,
    /// Backoff delays waited since this relay started, after a broker or store failure.
    pub retries: u64,
    /// The next `$all` position it will publish from.
    pub next_position: Position,
    /// The last checkpoint written (or read at start).
    pub checkpoint: Option<Position>,
    /// `$all` positions between `next_position` and the log's end (all events, not only those
    /// passing the filter), measured at most every [`LAG_INTERVAL`]; `None` before the first
    /// measurement.
    pub lag: Option<u64>,
}

/// Relays a store's events to a broker; see the crate documentation.
pub struct Relay {
    store: Arc<dyn EventStore>,
    transport: Arc<dyn Transport>,
    config: RelayConfig,
    checkpoint_stream: StreamName,
    progress: watch::Sender<RelayProgress>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("broker", &self.transport.broker())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Reads the checkpoint of the relay `name` in `store`: the next `$all` position it will publish,
/// `None` when it has none (it starts from the beginning).
pub async fn read_checkpoint(
    store: &dyn EventStore,
    name: &RelayName,
) -> Result<Option<Position>, RelayError> {
    let stream = name.checkpoint_stream();
    match store.read_stream(&stream, ReadStream::backward(1)).await {
        Ok(slice) => match slice.events.first() {
            None => Ok(None),
            Some(e) => parse_checkpoint(e)
                .map(Some)
                .map_err(|detail| RelayError::Checkpoint {
                    stream: stream.to_string(),
                    detail,
                }),
        },
        Err(StoreError::StreamNotFound { .. }) => Ok(None),
        Err(error) => Err(RelayError::Store {
            doing: "reading its checkpoint",
            error,
        }),
    }
}

fn parse_checkpoint(e: &RecordedEvent) -> Result<Position, String> {
    if e.event_type.as_str() != CHECKPOINT_EVENT_TYPE {
        return Err(format!(
            "its last event has type {}, not {CHECKPOINT_EVENT_TYPE}",
            e.event_type
        ));
    }
    e.data_json()
        .and_then(|v| v.get("position").and_then(|p| p.as_u64()))
        .map(Position)
        .ok_or_else(|| "its last event's data is not {\"position\": <unsigned integer>}".to_owned())
}

/// Whether `e` is a relay checkpoint (of any relay): never relayed.
pub fn is_checkpoint_event(e: &RecordedEvent) -> bool {
    e.event_type.as_str() == CHECKPOINT_EVENT_TYPE
        && e.stream.as_str().starts_with(CHECKPOINT_STREAM_PREFIX)
}

/// A retryable failure, or the error that stops the relay.
enum Failure {
    Store(&'static str, StoreError),
    Transport(TransportError),
    Ended,
}

/// Why the work loop ended without finishing (it never finishes otherwise).
enum Halt {
    /// The shutdown signal came.
    Stopped,
    /// An error that stops the relay.
    Failed(RelayError),
}

impl From<RelayError> for Halt {
    fn from(e: RelayError) -> Halt {
        Halt::Failed(e)
    }
}

/// Consecutive failures, so a streak is logged once.
#[derive(Default)]
struct Streak {
    attempts: u32,
}

/// One batch read from the subscription.
struct Batch {
    events: Vec<RecordedEvent>,
    messages: Vec<Message>,
    /// The last position read, checkpoints included.
    last: Position,
}

/// The `publish {topic}` producer span of one batch (nothing when tracing is off), linked to
/// the context each message carries in its `ce_traceparent` header (the event's stored one).
fn publish_span(topic: &Topic, messages: &[Message]) -> eventfold_trace::Span {
    use eventfold_trace::{Attribute, Kind, Span, semconv};
    use eventfold_transport::wire::{H_TRACEPARENT, H_TRACESTATE};
    if !eventfold_trace::enabled() {
        return Span::none();
    }
    let contexts: Vec<eventfold_core::TraceContext> = messages
        .iter()
        .filter_map(|m| {
            eventfold_core::TraceContext::parse(m.header(H_TRACEPARENT), m.header(H_TRACESTATE))
                .ok()
                .flatten()
        })
        .collect();
    Span::start(
        format!("publish {topic}"),
        Kind::Producer,
        None,
        &contexts,
        || {
            vec![
                Attribute::new(semconv::MESSAGING_OPERATION_NAME, "publish"),
                Attribute::new(semconv::MESSAGING_OPERATION_TYPE, "send"),
                Attribute::new(semconv::MESSAGING_DESTINATION_NAME, topic.to_string()),
                Attribute::new(
                    semconv::MESSAGING_BATCH_MESSAGE_COUNT,
                    messages.len() as i64,
                ),
            ]
        },
    )
}

fn message_bytes(m: &Message) -> usize {
    m.key.len()
        + m.payload.len()
        + m.headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// The subscription with an event read but held back for the next batch (it would have made
/// the batch too large).
struct Reader {
    sub: EventSubscription,
    held: Option<RecordedEvent>,
}

impl Reader {
    async fn next(&mut self) -> Result<RecordedEvent, Failure> {
        if let Some(e) = self.held.take() {
            return Ok(e);
        }
        match self.sub.next().await {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => Err(Failure::Store("reading $all", e)),
            None => Err(Failure::Ended),
        }
    }

    /// The next event if one is ready now.
    fn ready(&mut self) -> Option<Result<RecordedEvent, Failure>> {
        if let Some(e) = self.held.take() {
            return Some(Ok(e));
        }
        match self.sub.next().now_or_never()? {
            Some(Ok(e)) => Some(Ok(e)),
            Some(Err(e)) => Some(Err(Failure::Store("reading $all", e))),
            None => Some(Err(Failure::Ended)),
        }
    }

    /// Waits for one event, then takes whatever else is ready, within the limits.
    async fn batch(&mut self, events_max: usize, bytes_max: usize) -> Result<Batch, Failure> {
        let mut batch = Batch {
            events: Vec::new(),
            messages: Vec::new(),
            last: Position(0),
        };
        let mut bytes = 0usize;
        let mut first = Some(self.next().await?);
        loop {
            let e = match first.take() {
                Some(e) => e,
                None => match self.ready() {
                    Some(r) => r?,
                    None => break,
                },
            };
            if is_checkpoint_event(&e) {
                batch.last = e.position;
                continue;
            }
            let m = wire::encode(&e);
            let size = message_bytes(&m);
            if !batch.messages.is_empty() && bytes.saturating_add(size) > bytes_max {
                self.held = Some(e);
                break;
            }
            bytes += size;
            batch.last = e.position;
            batch.events.push(e);
            batch.messages.push(m);
            if batch.messages.len() >= events_max || bytes >= bytes_max {
                break;
            }
        }
        Ok(batch)
    }
}

impl Relay {
    /// A relay of `store`'s events to `transport`, as `config` says.
    pub fn new(
        store: Arc<dyn EventStore>,
        transport: Arc<dyn Transport>,
        config: RelayConfig,
    ) -> Result<Relay, RelayError> {
        config.validate()?;
        let checkpoint_stream = config.name.checkpoint_stream();
        Ok(Relay {
            store,
            transport,
            config,
            checkpoint_stream,
            progress: watch::Sender::new(RelayProgress::default()),
        })
    }

    /// Its progress, updated after every confirmed batch and every failure.
    pub fn progress(&self) -> watch::Receiver<RelayProgress> {
        self.progress.subscribe()
    }

    /// The stream holding its checkpoints.
    pub fn checkpoint_stream(&self) -> &StreamName {
        &self.checkpoint_stream
    }

    /// Relays until `shutdown` completes (`Ok`) or a non-retryable error (`Err`).
    ///
    /// `shutdown` is heeded between batches and during backoff delays: a batch whose publish
    /// has started is published and checkpointed before `run` returns (each broker call is
    /// bounded by its adapter's timeouts), so a clean stop republishes nothing. Stopping at any
    /// other moment (a crash, or dropping the future) loses nothing either: what was published
    /// after the last checkpoint is published again by the next run.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), RelayError> {
        let shutdown = shutdown.shared();
        let result = match self.work(shutdown).await {
            Ok(()) | Err(Halt::Stopped) => Ok(()),
            Err(Halt::Failed(e)) => Err(e),
        };
        self.progress.send_modify(|p| {
            p.state = match &result {
                Ok(()) => RelayState::Stopped,
                Err(e) => RelayState::Failed(e.to_string()),
            }
        });
        if result.is_ok() {
            tracing::info!(relay = %self.config.name, "relay stopped");
        }
        result
    }

    async fn work<S>(&self, shutdown: Shared<S>) -> Result<(), Halt>
    where
        S: Future<Output = ()>,
    {
        let mut streak = Streak::default();
        let mut next = loop {
            let started = tokio::select! {
                biased;
                () = shutdown.clone() => return Err(Halt::Stopped),
                r = self.start() => r,
            };
            match started {
                Ok(p) => break p,
                Err(RelayError::Store { doing, error }) if is_transient(&error) => {
                    self.failed(&mut streak, Failure::Store(doing, error), &shutdown)
                        .await?
                }
                Err(e) => return Err(Halt::Failed(e)),
            }
        };
        self.recovered(&mut streak);
        let mut lag_at: Option<Instant> = None;
        // The next position the lag was last measured at.
        let mut lag_for: Option<Position> = None;
        loop {
            let mut reader = Reader {
                sub: self
                    .store
                    .subscribe_all(SubscribeFrom::At(next), self.config.filter.clone()),
                held: None,
            };
            loop {
                // Waiting for events: the lag is measured once more after a quiet
                // LAG_INTERVAL, so an idle relay does not keep showing the lag of its last
                // busy moment. (`batch` is cancel-safe: it awaits only the first event.)
                let read = loop {
                    tokio::select! {
                        biased;
                        () = shutdown.clone() => return Err(Halt::Stopped),
                        r = reader.batch(self.config.batch_events_max, self.config.batch_bytes_max) => break r,
                        () = tokio::time::sleep(LAG_INTERVAL), if lag_for != Some(next) => {
                            lag_at = Some(Instant::now());
                            lag_for = Some(next);
                            self.measure_lag(next).await;
                        }
                    }
                };
                let batch = match read {
                    Ok(b) => b,
                    Err(f) => {
                        self.failed(&mut streak, f, &shutdown).await?;
                        break;
                    }
                };
                let after = Position(batch.last.0.saturating_add(1));
                if !batch.messages.is_empty() {
                    self.publish(&mut streak, &batch.messages, &shutdown)
                        .await?;
                    self.write_checkpoint(&mut streak, after, &shutdown).await?;
                    let n = batch.messages.len() as u64;
                    self.progress.send_modify(|p| {
                        p.published += n;
                        p.batches += 1;
                        p.checkpoint = Some(after);
                    });
                }
                next = next.max(after);
                self.progress.send_modify(|p| {
                    p.next_position = next;
                    p.state = RelayState::Running;
                });
                if lag_at.is_none_or(|t| t.elapsed() >= LAG_INTERVAL) {
                    lag_at = Some(Instant::now());
                    lag_for = Some(next);
                    self.measure_lag(next).await;
                }
            }
        }
    }

    /// Sets the checkpoint stream's max-count and reads the checkpoint.
    async fn start(&self) -> Result<Position, RelayError> {
        let stream = &self.checkpoint_stream;
        let store_err = |error| RelayError::Store {
            doing: "setting its checkpoint stream's max-count",
            error,
        };
        let metadata = self.store.get_metadata(stream).await.map_err(store_err)?;
        if metadata.max_count != Some(CHECKPOINT_KEEP) {
            let metadata = StreamMetadata {
                max_count: Some(CHECKPOINT_KEEP),
                ..metadata
            };
            self.store
                .set_metadata(stream, metadata)
                .await
                .map_err(store_err)?;
        }
        let checkpoint = read_checkpoint(&*self.store, &self.config.name).await?;
        let next = checkpoint.unwrap_or(Position(0));
        tracing::info!(
            relay = %self.config.name,
            broker = self.transport.broker(),
            topic = %self.config.topic,
            position = next.0,
            "relay starting from $all position {}", next.0
        );
        self.progress.send_modify(|p| {
            p.checkpoint = checkpoint;
            p.next_position = next;
            p.state = RelayState::Running;
        });
        Ok(next)
    }

    async fn publish<S: Future<Output = ()>>(
        &self,
        streak: &mut Streak,
        messages: &[Message],
        shutdown: &Shared<S>,
    ) -> Result<(), Halt> {
        let _span = publish_span(&self.config.topic, messages);
        loop {
            match self.transport.publish(&self.config.topic, messages).await {
                Ok(()) => {
                    self.recovered(streak);
                    return Ok(());
                }
                Err(e) => {
                    self.progress.send_modify(|p| p.broker_errors += 1);
                    self.failed(streak, Failure::Transport(e), shutdown).await?
                }
            }
        }
    }

    async fn write_checkpoint<S: Future<Output = ()>>(
        &self,
        streak: &mut Streak,
        next: Position,
        shutdown: &Shared<S>,
    ) -> Result<(), Halt> {
        let event = NewEvent::json(
            EventType::new(CHECKPOINT_EVENT_TYPE).expect("a valid event type"),
            &serde_json::json!({ "position": next.0 }),
        );
        // The same id on every attempt: a retry after an uncertain failure is an idempotent
        // replay rather than a second checkpoint.
        let event = event.with_id(EventId::new_v7());
        loop {
            match self
                .store
                .append(
                    &self.checkpoint_stream,
                    ExpectedRevision::Any,
                    vec![event.clone()],
                )
                .await
            {
                Ok(_) => {
                    self.recovered(streak);
                    return Ok(());
                }
                Err(e) => {
                    self.failed(
                        streak,
                        Failure::Store("writing its checkpoint", e),
                        shutdown,
                    )
                    .await?
                }
            }
        }
    }

    async fn measure_lag(&self, next: Position) {
        // One read of the log's last event; a failure only leaves the lag as it was.
        if let Ok(slice) = self.store.read_all(ReadAll::backward(1)).await {
            let end = slice.events.first().map_or(0, |e| e.position.0 + 1);
            let lag = end.saturating_sub(next.0);
            self.progress.send_modify(|p| p.lag = Some(lag));
        }
    }

    /// Decides about a failure: `Ok` after the backoff delay when it is retryable, `Err` when
    /// it stops the relay.
    ///
    /// A shutdown during the delay stops the relay (`Halt::Stopped`).
    async fn failed<S: Future<Output = ()>>(
        &self,
        streak: &mut Streak,
        failure: Failure,
        shutdown: &Shared<S>,
    ) -> Result<(), Halt> {
        let message = match failure {
            Failure::Store(doing, error) if is_transient(&error) => {
                format!("the store failed while {doing}: {error}")
            }
            Failure::Store(doing, error) => {
                return Err(Halt::Failed(RelayError::Store { doing, error }));
            }
            Failure::Transport(e) if e.is_retryable() => format!("publishing failed: {e}"),
            Failure::Transport(e) => return Err(Halt::Failed(RelayError::Transport(e))),
            Failure::Ended => "the $all subscription ended".to_owned(),
        };
        streak.attempts = streak.attempts.saturating_add(1);
        if let Some(max) = self.config.retry.max_attempts
            && streak.attempts >= max
        {
            return Err(Halt::Failed(RelayError::GaveUp {
                attempts: streak.attempts,
                last: message,
            }));
        }
        if streak.attempts == 1 {
            tracing::warn!(
                relay = %self.config.name,
                "relay failed, retrying with backoff (logged once until it recovers): {message}"
            );
        }
        self.progress.send_modify(|p| {
            p.retries += 1;
            p.state = RelayState::Retrying {
                attempts: streak.attempts,
                error: message.clone(),
            }
        });
        tokio::select! {
            biased;
            () = shutdown.clone() => Err(Halt::Stopped),
            () = tokio::time::sleep(self.config.retry.delay(streak.attempts)) => Ok(()),
        }
    }

    fn recovered(&self, streak: &mut Streak) {
        if streak.attempts > 0 {
            tracing::info!(
                relay = %self.config.name,
                attempts = streak.attempts,
                "relay recovered after {} failed attempts", streak.attempts
            );
            streak.attempts = 0;
        }
    }
}
