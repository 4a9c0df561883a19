//! An in-process event bus for one-process applications: publish events under topics,
//! subscribe with topic patterns, run [`EventHandler`]s on it.
//!
//! **Topics and patterns** (AMQP style): a topic is dot-separated words (`order.placed`); a
//! pattern's `*` matches exactly one word and `#` zero or more (`order.*`, `#.failed`, `#`).
//! A typed event's topic is its event type.
//!
//! **Back-pressure:** every subscriber has a bounded queue (the bus's `queue_capacity`), and a
//! publisher *waits* while a matching subscriber's queue is full. Nothing is dropped and no
//! subscriber lags behind what was published; the price is that a slow subscriber slows the
//! publishers of the topics it matches (a stuck one blocks them: keep handlers short, or give
//! slow work its own task). A subscriber receives one publisher's messages in publish order.
//!
//! **Delivery:** in memory, so at most once across a crash; for durable, at-least-once work
//! run the handler on the store ([`HandlerRunner`](crate::HandlerRunner)) instead.
//!
//! **Testing:** [`Bus::recording`] keeps everything published, for assertions
//! ([`Bus::recorded`], [`Bus::recorded_events`]).

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use eventfold_core::{
    ContentType, EventId, EventType, PatternWord, Position, RecordedEvent, Revision, StreamName,
    Timestamp,
};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::event::{CodecError, DomainEvent, Envelope};
use crate::handler::observe::{HandlerObserver, Observer};
use crate::handler::retry::decode_and_handle;
use crate::handler::running::stopped;
use crate::handler::{DeadLetter, EventHandler, HandlerStats, RunningHandler};
use crate::retry::RetryPolicy;
use crate::upcast::Upcasters;
use crate::{Codec, Context, encode_event};

/// Queue capacity per subscriber of [`Bus::default`].
pub const QUEUE_CAPACITY_DEFAULT: usize = 1024;
/// Most messages a recording bus keeps (the oldest are forgotten first).
pub const RECORDED_MAX: usize = 100_000;
/// Most dead letters the bus keeps (the oldest are forgotten first).
pub const DEAD_LETTERS_MAX: usize = 10_000;
/// The stream name bus messages carry (they are not in any store).
const BUS_STREAM: &str = "bus";

/// Why a topic pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// A pattern with an empty word (`order..placed`, `.order`, or the empty pattern).
    #[error(
        "topic pattern {pattern:?} has an empty word; write dot-separated words like `order.*` or `#`"
    )]
    EmptyWord {
        /// The pattern.
        pattern: String,
    },
    /// `*` or `#` inside a word (`order*`).
    #[error(
        "topic pattern {pattern:?} uses `*` or `#` inside the word {word:?}; a wildcard must be a whole word (`order.*`)"
    )]
    WildcardInWord {
        /// The pattern.
        pattern: String,
        /// The word.
        word: String,
    },
}

/// Why a message could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The event did not encode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The topic is not a valid event type (empty, too long, control characters).
    #[error("cannot publish under topic {topic:?}: {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A validated topic pattern: dot-separated words, `*` for one word, `#` for zero or more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPattern {
    text: String,
    words: Vec<PatternWord>,
}

impl TopicPattern {
    /// Validates `pattern`.
    pub fn new(pattern: &str) -> Result<Self, PatternError> {
        let words = pattern
            .split('.')
            .map(|w| match w {
                "" => Err(PatternError::EmptyWord {
                    pattern: pattern.to_owned(),
                }),
                "*" => Ok(PatternWord::One),
                "#" => Ok(PatternWord::Many),
                w if w.contains(['*', '#']) => Err(PatternError::WildcardInWord {
                    pattern: pattern.to_owned(),
                    word: w.to_owned(),
                }),
                w => Ok(PatternWord::Literal(w.into())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TopicPattern {
            text: pattern.to_owned(),
            words,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `topic` matches (the matcher of `eventfold-core`'s type patterns).
    pub fn matches(&self, topic: &str) -> bool {
        PatternWord::match_all(&self.words, topic)
    }
}

impl FromStr for TopicPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TopicPattern::new(s)
    }
}

impl std::fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A message on the bus: its topic and the event it carries. Cheap to clone.
///
/// An event published on the bus (not read from a store) has the stream `bus`, and the bus's
/// publish sequence number as revision and position.
#[derive(Clone, Debug, PartialEq)]
pub struct BusMessage {
    /// The topic it was published under.
    pub topic: Arc<str>,
    /// The event.
    pub event: Arc<RecordedEvent>,
}

impl BusMessage {
    /// The event decoded as `E` (upcast by `upcasters` when old).
    pub fn decode<E: DomainEvent>(&self, upcasters: &Upcasters) -> Result<Envelope<E>, CodecError> {
        upcasters.decode((*self.event).clone())
    }

    /// The data parsed as JSON (for raw messages), `None` when it is not JSON.
    pub fn data_json(&self) -> Option<serde_json::Value> {
        self.event.data_json()
    }
}

struct Subscriber {
    id: u64,
    pattern: TopicPattern,
    tx: mpsc::Sender<BusMessage>,
}

struct Inner {
    subscribers: Mutex<Vec<Subscriber>>,
    next_subscriber: AtomicU64,
    sequence: AtomicU64,
    queue_capacity: usize,
    recorded: Option<Mutex<VecDeque<BusMessage>>>,
    dead_letters: Mutex<VecDeque<DeadLetter>>,
}

/// The in-process bus (see the [module docs](self) for topics and back-pressure). Cheap to
/// clone (shared).
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("subscribers", &self.inner.subscribers.lock().len())
            .field("queue_capacity", &self.inner.queue_capacity)
            .field("recording", &self.inner.recorded.is_some())
            .finish()
    }
}

impl Default for Bus {
    /// A bus with [`QUEUE_CAPACITY_DEFAULT`] messages per subscriber queue.
    fn default() -> Self {
        Bus::new(QUEUE_CAPACITY_DEFAULT)
    }
}

impl Bus {
    /// A bus whose subscribers each queue at most `queue_capacity` messages (at least 1).
    pub fn new(queue_capacity: usize) -> Self {
        Bus::build(queue_capacity, false)
    }

    /// A test bus: as [`Bus::new`], and it keeps every message published (up to
    /// [`RECORDED_MAX`]) for [`Bus::recorded`].
    pub fn recording(queue_capacity: usize) -> Self {
        Bus::build(queue_capacity, true)
    }

    fn build(queue_capacity: usize, recording: bool) -> Self {
        Bus {
            inner: Arc::new(Inner {
                subscribers: Mutex::new(Vec::new()),
                next_subscriber: AtomicU64::new(0),
                sequence: AtomicU64::new(0),
                queue_capacity: queue_capacity.max(1),
                recorded: recording.then(|| Mutex::new(VecDeque::new())),
                dead_letters: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// Subscribes to the topics matching `pattern`. Dropping the subscription unsubscribes.
    pub fn subscribe(&self, pattern: &str) -> Result<BusSubscription, PatternError> {
        let pattern = TopicPattern::new(pattern)?;
        let (tx, rx) = mpsc::channel(self.inner.queue_capacity);
        let id = self.inner.next_subscriber.fetch_add(1, Ordering::Relaxed);
        self.inner.subscribers.lock().push(Subscriber {
            id,
            pattern: pattern.clone(),
            tx,
        });
        Ok(BusSubscription { pattern, rx })
    }

    /// How many subscriptions are open.
    pub fn subscriber_count(&self) -> usize {
        let mut subs = self.inner.subscribers.lock();
        subs.retain(|s| !s.tx.is_closed());
        subs.len()
    }

    /// Publishes a domain event under its event type as topic, with `context`'s ids in its
    /// metadata (JSON data). Waits while a matching subscriber's queue is full; answers how
    /// many subscribers got it.
    pub async fn publish_event<E: DomainEvent>(
        &self,
        event: &E,
        context: &Context,
    ) -> Result<usize, PublishError> {
        let new = encode_event(event, Codec::Json, context)?;
        let recorded = self.stamp(
            new.id,
            new.event_type,
            new.schema_version,
            new.content_type,
            new.data,
            new.metadata,
        );
        Ok(self.publish_recorded(recorded).await)
    }

    /// Publishes raw JSON under `topic` (which is also the message's event type).
    pub async fn publish_json(
        &self,
        topic: &str,
        data: &serde_json::Value,
    ) -> Result<usize, PublishError> {
        let event_type = EventType::new(topic).map_err(|e| PublishError::Topic {
            topic: topic.to_owned(),
            reason: e.to_string(),
        })?;
        let bytes = serde_json::to_vec(data).map_err(|e| CodecError::Encode {
            codec: Codec::Json,
            reason: e.to_string(),
        })?;
        let recorded = self.stamp(
            EventId::new_v7(),
            event_type,
            1,
            ContentType::json(),
            bytes,
            eventfold_core::Metadata::new(),
        );
        Ok(self.publish_recorded(recorded).await)
    }

    /// Publishes an event read from a store (relaying appended events onto the bus) under its
    /// event type as topic.
    pub async fn publish_recorded(&self, event: RecordedEvent) -> usize {
        let message = BusMessage {
            topic: Arc::from(event.event_type.as_str()),
            event: Arc::new(event),
        };
        self.publish(message).await
    }

    fn stamp(
        &self,
        id: EventId,
        event_type: EventType,
        schema_version: u32,
        content_type: ContentType,
        data: Vec<u8>,
        metadata: eventfold_core::Metadata,
    ) -> RecordedEvent {
        let seq = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
        RecordedEvent {
            id,
            stream: StreamName::new(BUS_STREAM).expect("a valid constant stream name"),
            event_type,
            revision: Revision(seq),
            position: Position(seq),
            timestamp: Timestamp::now(),
            schema_version,
            content_type,
            data,
            metadata,
            tags: eventfold_core::Tags::none(),
        }
    }

    /// Publishes `message` to every matching subscriber, waiting while one's queue is full;
    /// answers how many got it.
    pub async fn publish(&self, message: BusMessage) -> usize {
        if let Some(rec) = &self.inner.recorded {
            let mut rec = rec.lock();
            if rec.len() >= RECORDED_MAX {
                rec.pop_front();
            }
            rec.push_back(message.clone());
        }
        let targets: Vec<(u64, mpsc::Sender<BusMessage>)> = self
            .inner
            .subscribers
            .lock()
            .iter()
            .filter(|s| s.pattern.matches(&message.topic))
            .map(|s| (s.id, s.tx.clone()))
            .collect();
        let mut delivered = 0;
        let mut gone = Vec::new();
        for (id, tx) in targets {
            match tx.send(message.clone()).await {
                Ok(()) => delivered += 1,
                Err(_) => gone.push(id),
            }
        }
        if !gone.is_empty() {
            self.inner
                .subscribers
                .lock()
                .retain(|s| !gone.contains(&s.id));
        }
        delivered
    }

    /// Everything published so far, in order (empty unless made with [`Bus::recording`]).
    pub fn recorded(&self) -> Vec<BusMessage> {
        self.inner
            .recorded
            .as_ref()
            .map(|r| r.lock().iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The topics of everything published so far, in order.
    pub fn recorded_topics(&self) -> Vec<String> {
        self.recorded()
            .iter()
            .map(|m| m.topic.to_string())
            .collect()
    }

    /// The recorded messages that decode as `E`, decoded, in order.
    pub fn recorded_events<E: DomainEvent>(&self) -> Vec<E> {
        let upcasters = Upcasters::new();
        self.recorded()
            .iter()
            .filter(|m| E::knows(m.event.event_type.as_str()))
            .filter_map(|m| m.decode::<E>(&upcasters).ok())
            .map(|e| e.event)
            .collect()
    }

    /// Forgets what was recorded.
    pub fn clear_recorded(&self) {
        if let Some(r) = &self.inner.recorded {
            r.lock().clear();
        }
    }

    /// The events bus handlers gave up on (up to [`DEAD_LETTERS_MAX`], oldest first).
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.dead_letters.lock().iter().cloned().collect()
    }

    /// Runs `handler` on its own task on the messages matching `pattern` whose event type `E`
    /// knows, each under `retry`; one that still fails is kept in [`Bus::dead_letters`] and the
    /// handler goes on. Stopping the returned handle abandons the message in hand.
    pub fn subscribe_handler<E, H>(
        &self,
        pattern: &str,
        handler: H,
        retry: RetryPolicy,
    ) -> Result<RunningHandler, PatternError>
    where
        E: DomainEvent,
        H: EventHandler<E>,
    {
        self.run_handler(pattern, handler, retry, Observer::default())
    }

    /// [`Bus::subscribe_handler`], telling `observer` how each message's handling ended (from
    /// its first attempt to success or to being dead-lettered, retry delays included), for the
    /// program's metrics ([`crate::FrameworkMetrics`] is an observer).
    pub fn subscribe_handler_observed<E, H>(
        &self,
        pattern: &str,
        handler: H,
        retry: RetryPolicy,
        observer: Arc<dyn HandlerObserver>,
    ) -> Result<RunningHandler, PatternError>
    where
        E: DomainEvent,
        H: EventHandler<E>,
    {
        self.run_handler(pattern, handler, retry, Observer::new(observer))
    }

    fn run_handler<E, H>(
        &self,
        pattern: &str,
        handler: H,
        retry: RetryPolicy,
        observer: Observer,
    ) -> Result<RunningHandler, PatternError>
    where
        E: DomainEvent,
        H: EventHandler<E>,
    {
        let mut subscription = self.subscribe(pattern)?;
        let name = handler.name().to_owned();
        // Weak: a handler task must not keep the bus (and so its own queue) alive.
        let bus: Weak<Inner> = Arc::downgrade(&self.inner);
        Ok(RunningHandler::spawn(
            name,
            |mut stop, stats_tx| async move {
                let upcasters = Upcasters::new();
                loop {
                    let message = tokio::select! {
                        biased;
                        () = stopped(&mut stop) => return Ok(()),
                        m = subscription.recv() => m,
                    };
                    let Some(message) = message else {
                        return Ok(());
                    };
                    tokio::select! {
                        biased;
                        () = stopped(&mut stop) => return Ok(()),
                        () = handle_message(&handler, &message, &upcasters, &retry, &observer, &stats_tx, &bus) => {}
                    }
                }
            },
        ))
    }
}

async fn handle_message<E: DomainEvent, H: EventHandler<E>>(
    handler: &H,
    message: &BusMessage,
    upcasters: &Upcasters,
    retry: &RetryPolicy,
    observer: &Observer,
    stats: &watch::Sender<HandlerStats>,
    bus: &Weak<Inner>,
) {
    let event_type = message.event.event_type.as_str();
    if !E::knows(event_type) {
        return;
    }
    let started = observer.start();
    let handled = decode_and_handle(handler, message.decode::<E>(upcasters), retry).await;
    let Err((attempts, error)) =
        observer.report_retried(started, handler.name(), event_type, handled, stats)
    else {
        return;
    };
    tracing::error!(handler = handler.name(), topic = %message.topic, id = %message.event.id, attempts, %error, "bus message dead-lettered");
    stats.send_modify(|s| s.record_dead_lettered(attempts));
    if let Some(inner) = bus.upgrade() {
        let mut letters = inner.dead_letters.lock();
        if letters.len() >= DEAD_LETTERS_MAX {
            letters.pop_front();
        }
        letters.push_back(DeadLetter {
            handler: handler.name().to_owned(),
            original: (*message.event).clone(),
            error,
            attempts,
            position: None,
        });
    }
}

/// A subscription to the bus: receive the matching messages in order. Drop it to unsubscribe.
#[derive(Debug)]
pub struct BusSubscription {
    pattern: TopicPattern,
    rx: mpsc::Receiver<BusMessage>,
}

impl BusSubscription {
    /// The pattern subscribed to.
    pub fn pattern(&self) -> &TopicPattern {
        &self.pattern
    }

    /// The next message; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<BusMessage> {
        self.rx.recv().await
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<BusMessage> {
        self.rx.try_recv().ok()
    }

    /// How many messages are queued.
    pub fn queued(&self) -> usize {
        self.rx.len()
    }
}
