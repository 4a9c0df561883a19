//! One interface over message brokers, so that services which already run Redis Streams,
//! RabbitMQ, Kafka or NATS JetStream can carry eventfold events on them.
//!
//! - [`Transport`] is the seam every broker adapter implements (one crate per broker): publish
//!   messages to a [`Topic`] in order, and open a [`Subscriber`] of a topic as a named
//!   [`ConsumerGroup`] (every group gets every message; the subscribers of one group share them)
//!   with ack, retry after a delay and dead letters, using the broker's own machinery for each.
//! - [`wire`] is the one mapping of an event onto a message (CloudEvents binary mode: `ce_*`
//!   headers, the data as payload, the stream as key), so adapters cannot disagree.
//! - [`Consumer`] is what applications use on top of any subscriber: decoded events, the retry
//!   policy (backoff, then dead letter after `max_deliveries` attempts), and messages that are not
//!   eventfold events dead-lettered with the reason instead of reaching a handler.
//!
//! The conformance suite every adapter runs is `eventfold-transport-conformance`.

mod memory;
pub mod wire;

use std::time::Duration;

use eventfold_core::RecordedEvent;

pub use memory::MemoryTransport;
pub use wire::{DecodeError, Message};

/// Longest topic or group name: fits every broker's limits once adapters add their suffixes.
pub const NAME_BYTES_MAX: usize = 100;
/// Most attempts a subscriber may be configured for.
pub const MAX_DELIVERIES_MAX: u32 = 1_000;
/// Longest delay a retry may ask for.
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(24 * 3600);

/// What went wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The broker cannot be reached or dropped the connection: retry later (with backoff).
    #[error("{broker} is unavailable at {url}: {detail}")]
    Unavailable {
        broker: &'static str,
        /// Where it was looked for, without credentials.
        url: String,
        detail: String,
    },
    /// The broker refused the operation (too big, not allowed, a topology that conflicts).
    #[error("{broker} refused to {action}: {detail}")]
    Rejected {
        broker: &'static str,
        action: &'static str,
        detail: String,
    },
    /// A name or setting that cannot be used; says what to do instead.
    #[error("{0}")]
    Invalid(String),
    /// The subscriber or transport was closed.
    #[error("the {broker} subscriber is closed")]
    Closed { broker: &'static str },
}

impl TransportError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TransportError::Unavailable { .. })
    }
}

/// The result of a transport operation.
pub type TransportResult<T> = Result<T, TransportError>;

fn check_name(kind: &str, s: &str) -> TransportResult<()> {
    if s.is_empty()
        || s.len() > NAME_BYTES_MAX
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(TransportError::Invalid(format!(
            "{kind} {s:?} is not a valid name: use 1..={NAME_BYTES_MAX} ASCII letters, digits, `_` or `-` \
             (every broker accepts these, with the suffixes eventfold adds)"
        )));
    }
    Ok(())
}

/// Where events are published: a Redis stream key, a RabbitMQ topic exchange, a Kafka topic, a
/// JetStream stream with its subjects. 1..=100 bytes of `[A-Za-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    /// A validated topic name.
    pub fn new(s: impl Into<String>) -> TransportResult<Topic> {
        let s = s.into();
        check_name("topic", &s)?;
        Ok(Topic(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A named consumer group: every group gets every message of a topic, the subscribers of one
/// group share them. 1..=100 bytes of `[A-Za-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerGroup(String);

impl ConsumerGroup {
    /// A validated group name.
    pub fn new(s: impl Into<String>) -> TransportResult<ConsumerGroup> {
        let s = s.into();
        check_name("consumer group", &s)?;
        Ok(ConsumerGroup(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ConsumerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a broker guarantees through its adapter; the conformance suite checks what is claimed
/// and skips the cases of what is not, and the broker's page in `docs/transports/` says the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// The messages of one key reach a group in publish order, and one not yet acked (or being
    /// retried) holds back the key's later messages (Kafka's partitions). Without it, order per
    /// key holds only while nothing is retried.
    pub ordered_per_key: bool,
    /// A retry waits the delay asked for; without it, a retried message may come back sooner.
    pub delayed_retry: bool,
    /// A group created after messages were published reads them (the broker keeps a log:
    /// Redis Streams, Kafka, JetStream); without it a group gets what is published after it
    /// was first subscribed (RabbitMQ queues).
    pub history: bool,
}

/// How a subscriber is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeSettings {
    /// A message is dead-lettered once it was delivered this many times without an ack (the
    /// broker's own limit where it has one, `x-delivery-limit`, `max_deliver`).
    pub max_deliveries: u32,
    /// A delivery neither acked nor retried within this is delivered again (a crashed consumer).
    pub ack_timeout: Duration,
    /// Most messages handed to this subscriber and not yet settled.
    pub prefetch: usize,
}

impl Default for SubscribeSettings {
    fn default() -> Self {
        SubscribeSettings {
            max_deliveries: 5,
            ack_timeout: Duration::from_secs(30),
            prefetch: 64,
        }
    }
}

impl SubscribeSettings {
    /// Refuses settings no broker can honour, saying which and why.
    pub fn validate(&self) -> TransportResult<()> {
        if !(1..=MAX_DELIVERIES_MAX).contains(&self.max_deliveries) {
            return Err(TransportError::Invalid(format!(
                "max_deliveries {} is not in 1..={MAX_DELIVERIES_MAX}",
                self.max_deliveries
            )));
        }
        if self.ack_timeout < Duration::from_millis(100) || self.ack_timeout > RETRY_DELAY_MAX {
            return Err(TransportError::Invalid(format!(
                "ack_timeout {:?} is not between 100 ms and a day",
                self.ack_timeout
            )));
        }
        if !(1..=10_000).contains(&self.prefetch) {
            return Err(TransportError::Invalid(format!(
                "prefetch {} is not in 1..=10000",
                self.prefetch
            )));
        }
        Ok(())
    }
}

/// The adapter's handle of one delivery (a Redis entry id, an AMQP delivery tag, a JetStream
/// reply subject, a Kafka partition and offset). Opaque to everyone else.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    pub fn new(s: impl Into<String>) -> Token {
        Token(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message as a subscriber received it.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The adapter's handle, to settle it with.
    pub token: Token,
    /// 1 for the first delivery, 2 for the first redelivery, ... (as the broker counts).
    pub attempt: u32,
    /// The message.
    pub message: Message,
}

/// A broker adapter: publish to topics, subscribe as groups.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// The broker's name, for messages, metrics and docs (`redis`, `rabbitmq`, `kafka`, `nats`).
    fn broker(&self) -> &'static str;

    /// What this adapter guarantees.
    fn features(&self) -> Features;

    /// Sends `messages` to `topic` in order; answered once the broker has confirmed every one
    /// (its acknowledgement or publisher confirm). Each message's `ce_id` is passed as the
    /// broker's de-duplication id where it has one.
    async fn publish(&self, topic: &Topic, messages: &[Message]) -> TransportResult<()>;

    /// Opens a subscriber of `topic` in `group`. A group that does not exist yet is created and
    /// starts with the oldest message the broker keeps on the topic.
    async fn subscribe(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        settings: &SubscribeSettings,
    ) -> TransportResult<Box<dyn Subscriber>>;

    /// The group's dead letters, oldest first, at most `max`, without removing them.
    async fn dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<Vec<DeadLetter>>;

    /// Delivers up to `max` of the group's dead letters to the group again (oldest first, to
    /// that group only) and removes them from the dead letters; returns how many.
    async fn replay_dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<usize>;
}

/// One consumer of a topic in a group.
#[async_trait::async_trait]
pub trait Subscriber: Send + 'static {
    /// Waits for the next message. Dropping the future loses nothing: a message fetched but not
    /// returned is delivered again (after the ack timeout at the latest).
    async fn receive(&mut self) -> TransportResult<Incoming>;

    /// Settles a delivery for good.
    async fn ack(&mut self, incoming: &Incoming) -> TransportResult<()>;

    /// Delivers it again after `delay` (see [`Features::delayed_retry`]).
    async fn retry(&mut self, incoming: &Incoming, delay: Duration) -> TransportResult<()>;

    /// Moves it to the group's dead letters with `reason`; not delivered again until replayed.
    async fn dead_letter(&mut self, incoming: &Incoming, reason: &str) -> TransportResult<()>;

    /// Stops receiving; what was received and not settled is delivered again.
    async fn close(self: Box<Self>) -> TransportResult<()>;
}

/// A dead-lettered message with why.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub message: Message,
    pub reason: String,
    /// Deliveries made before it was dead-lettered.
    pub attempts: u32,
}

/// A broker URL without its password, for messages: `amqp://user:secret@host:5672/%2f` →
/// `amqp://user@host:5672/%2f`, `redis://:secret@host:6379` → `redis://host:6379`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if user.is_empty() {
                format!("{scheme}://{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

/// Publishes events in order (encoded by [`wire::encode`]).
pub async fn publish_events(
    transport: &dyn Transport,
    topic: &Topic,
    events: &[RecordedEvent],
) -> TransportResult<()> {
    let messages: Vec<Message> = events.iter().map(wire::encode).collect();
    transport.publish(topic, &messages).await
}

/// How failed attempts are retried: the delay before attempt `n + 1` is
/// `initial * multiplier^(n - 1)`, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub multiplier: f64,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self
            .multiplier
            .max(1.0)
            .powi(i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX));
        let ms = (self.initial.as_secs_f64() * factor).min(self.max.as_secs_f64());
        Duration::from_secs_f64(ms.max(0.0)).min(self.max)
    }
}

/// One delivery of an event through a [`Consumer`].
#[derive(Debug)]
pub struct Delivery {
    /// The event.
    pub event: RecordedEvent,
    /// 1 for the first delivery, ...
    pub attempt: u32,
    incoming: Incoming,
}

/// What [`Consumer::fail`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failed {
    /// Delivered again after this delay.
    Retried(Duration),
    /// Its attempts were used up: dead-lettered.
    DeadLettered,
}

/// Events from any subscriber, with the retry policy: what applications and the framework use.
pub struct Consumer {
    subscriber: Box<dyn Subscriber>,
    max_deliveries: u32,
    backoff: Backoff,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("max_deliveries", &self.max_deliveries)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Subscribes `group` to `topic` through `transport`.
    pub async fn open(
        transport: &dyn Transport,
        topic: &Topic,
        group: &ConsumerGroup,
        settings: &SubscribeSettings,
        backoff: Backoff,
    ) -> TransportResult<Consumer> {
        settings.validate()?;
        let subscriber = transport.subscribe(topic, group, settings).await?;
        Ok(Consumer {
            subscriber,
            max_deliveries: settings.max_deliveries,
            backoff,
        })
    }

    /// The next event. A message that is not an eventfold event is dead-lettered with the
    /// reason on the way (logged), and one delivered more than `max_deliveries` times (a
    /// consumer crashed on it each time) is dead-lettered too; neither reaches the caller.
    pub async fn next(&mut self) -> TransportResult<Delivery> {
        loop {
            let incoming = self.subscriber.receive().await?;
            if incoming.attempt > self.max_deliveries {
                let reason = format!(
                    "delivered {} times without an ack (max_deliveries {})",
                    incoming.attempt - 1,
                    self.max_deliveries
                );
                self.subscriber.dead_letter(&incoming, &reason).await?;
                continue;
            }
            match wire::decode(&incoming.message) {
                Ok(event) => {
                    return Ok(Delivery {
                        event,
                        attempt: incoming.attempt,
                        incoming,
                    });
                }
                Err(e) => {
                    tracing::warn!(reason = %e.reason, "a message that is not an eventfold event was dead-lettered");
                    self.subscriber
                        .dead_letter(&incoming, &e.to_string())
                        .await?;
                }
            }
        }
    }

    /// The event was handled.
    pub async fn ack(&mut self, d: Delivery) -> TransportResult<()> {
        self.subscriber.ack(&d.incoming).await
    }

    /// Handling failed: delivered again after the backoff, or dead-lettered with `reason` once
    /// `max_deliveries` attempts were made.
    pub async fn fail(&mut self, d: Delivery, reason: &str) -> TransportResult<Failed> {
        if d.attempt >= self.max_deliveries {
            let reason = format!(
                "{reason} (attempt {} of {})",
                d.attempt, self.max_deliveries
            );
            self.subscriber.dead_letter(&d.incoming, &reason).await?;
            return Ok(Failed::DeadLettered);
        }
        let delay = self.backoff.delay(d.attempt);
        self.subscriber.retry(&d.incoming, delay).await?;
        Ok(Failed::Retried(delay))
    }

    /// Dead-letters it now (a poison event that no retry will fix).
    pub async fn dead_letter(&mut self, d: Delivery, reason: &str) -> TransportResult<()> {
        self.subscriber.dead_letter(&d.incoming, reason).await
    }

    /// Stops; what was received and not settled is delivered again.
    pub async fn close(self) -> TransportResult<()> {
        self.subscriber.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_every_broker() {
        assert!(Topic::new("orders").is_ok());
        assert!(Topic::new("order_events-2").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(101)] {
            let err = Topic::new(bad).unwrap_err().to_string();
            assert!(err.contains("not a valid name"), "{err}");
        }
        assert!(ConsumerGroup::new("email").is_ok());
        assert!(ConsumerGroup::new("e.mail").is_err());
    }

    #[test]
    fn backoff_grows_and_stops_at_max() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_millis(500),
        };
        let delays: Vec<u128> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn settings_are_checked() {
        assert!(SubscribeSettings::default().validate().is_ok());
        let bad = SubscribeSettings {
            max_deliveries: 0,
            ..SubscribeSettings::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("max_deliveries")
        );
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://user@host:6379/0"
        );
        assert_eq!(redact_url("redis://:secret@host:6379"), "redis://host:6379");
        assert_eq!(redact_url("rediss://a:b:c@h/1?x=y"), "rediss://a@h/1?x=y");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        assert!(!redact_url("redis://u:p%40ss@h:1").contains("p%40ss"));
        assert_eq!(
            redact_url("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest@host:5672/%2f"
        );
        assert_eq!(redact_url("amqp://:secret@host"), "amqp://host");
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact_url("nonsense"), "nonsense");
    }
}
