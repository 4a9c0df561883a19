//! eventfold events on RabbitMQ: [`RabbitTransport`] implements
//! [`eventfold_transport::Transport`] with RabbitMQ's own machinery.
//!
//! - A topic is a durable **topic exchange** of the same name (`events` → `events`); a message is
//!   published to it with the event type as routing key (so plain AMQP queues bind patterns like
//!   `order.*`), persistent, `message_id` = `ce_id`, the wire headers as AMQP headers, and
//!   answered once every publisher confirm came.
//! - A group is the durable **quorum queue** `{topic}.{group}` bound to the exchange with `#`
//!   (it gets what is published after it exists), with `x-delivery-limit` and a dead-letter
//!   exchange into the group's dead-letter queue `{topic}.{group}.dead`: RabbitMQ's own safety
//!   net for consumers that crash on a message forever.
//! - Subscribers consume with `basic.qos(prefetch)` and manual acks. The attempt is the quorum
//!   queue's `x-delivery-count` + 1, plus the attempts carried across delayed retries in
//!   `x-eventfold-attempts`.
//! - A retry publishes a copy (confirmed) to the group's delay queue for that delay,
//!   `{topic}.{group}.retry.{ms}` (one TTL per queue, so each copy leaves on time), which
//!   dead-letters it back into the group's queue; then the original is acked. Other groups never
//!   see a retry.
//! - A dead letter is a confirmed copy in `{topic}.{group}.dead` with the reason, then an ack.
//!   Reading them browses (`basic.get` without ack, then the channel is closed so they go back in
//!   order); replay moves them to the group's queue.
//!
//! `docs/transports/rabbitmq.md` is the page for operators and for consumers in other languages.

mod convert;
mod subscriber;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use eventfold_transport::{
    ConsumerGroup, DeadLetter, Features, Message, SubscribeSettings, Subscriber, Topic, Transport,
    TransportError, TransportResult,
};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

pub use crate::convert::{H_ATTEMPTS, H_DEAD_REASON, H_KEY};
use crate::convert::{error, short, unavailable};
use crate::subscriber::RabbitSubscriber;

/// The broker's name in errors and metrics.
pub const BROKER: &str = "rabbitmq";
/// How long opening a connection may take before RabbitMQ counts as unavailable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any one AMQP call (a confirm included) may wait before RabbitMQ counts as
/// unavailable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most messages published before their confirms are awaited (bounds what is in flight).
pub const PUBLISH_BATCH_MAX: usize = 1_000;
/// A delay queue is removed by RabbitMQ this long after its last use (`x-expires`, beyond the
/// delay itself, so a copy always leaves before its queue goes).
pub const DELAY_QUEUE_IDLE: Duration = Duration::from_secs(600);

/// How a transport declares what it creates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RabbitOptions {
    /// When set, the queues this transport declares are removed by RabbitMQ after this long
    /// without consumers (`x-expires`) and its exchanges once their last queue is gone
    /// (auto-delete): for tests and throw-away setups. `None` (the default) in production.
    pub expire_idle: Option<Duration>,
}

/// The names of a group's queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupNames {
    /// The topic exchange.
    pub exchange: String,
    /// The group's quorum queue, `{topic}.{group}`.
    pub queue: String,
    /// The group's dead letters, `{topic}.{group}.dead`.
    pub dead: String,
}

impl GroupNames {
    pub fn new(topic: &Topic, group: &ConsumerGroup) -> GroupNames {
        let queue = format!("{topic}.{group}");
        GroupNames {
            exchange: topic.as_str().to_owned(),
            dead: format!("{queue}.dead"),
            queue,
        }
    }

    /// The delay queue holding retries of `ms` milliseconds.
    pub fn delay(&self, ms: u64) -> String {
        format!("{}.retry.{ms}", self.queue)
    }
}

/// A delay rounded up to two significant digits of milliseconds (1234 ms → 1300 ms), so a group
/// has a bounded number of delay queues (at most 90 per power of ten) and no retry comes early.
pub fn delay_bucket(delay: Duration) -> u64 {
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    let mut unit = 1u64;
    while ms / unit >= 100 {
        unit *= 10;
    }
    ms.div_ceil(unit).saturating_mul(unit)
}

/// One connection, replaced after it was lost, with a publishing channel in confirm mode.
pub(crate) struct Link {
    uri: String,
    /// The URL without its password, for messages.
    pub(crate) shown: String,
    options: RabbitOptions,
    current: tokio::sync::Mutex<(u64, Option<Arc<Connection>>)>,
    publisher: tokio::sync::Mutex<Option<Publisher>>,
}

struct Publisher {
    connection: u64,
    channel: Channel,
    exchanges: HashSet<String>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

/// Waits for an AMQP call at most [`CALL_TIMEOUT`].
pub(crate) async fn call<T>(
    url: &str,
    action: &'static str,
    f: impl std::future::Future<Output = lapin::Result<T>>,
) -> TransportResult<T> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error(url, action, &e)),
        Err(_) => Err(unavailable(
            url,
            action,
            &format!("no answer within {CALL_TIMEOUT:?}"),
        )),
    }
}

impl Link {
    /// The open connection (and its generation), or a new one.
    pub(crate) async fn connection(&self) -> TransportResult<(u64, Arc<Connection>)> {
        let mut current = self.current.lock().await;
        if let (generation, Some(conn)) = &*current
            && conn.status().connected()
        {
            return Ok((*generation, conn.clone()));
        }
        let conn = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect(&self.uri, ConnectionProperties::default()),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(error(&self.shown, "connect", &e)),
            Err(_) => {
                return Err(unavailable(
                    &self.shown,
                    "connect",
                    &format!("no connection within {CONNECT_TIMEOUT:?}"),
                ));
            }
        };
        current.0 += 1;
        let conn = Arc::new(conn);
        current.1 = Some(conn.clone());
        Ok((current.0, conn))
    }

    /// A new channel on the connection.
    pub(crate) async fn channel(&self) -> TransportResult<(u64, Channel)> {
        let (generation, conn) = self.connection().await?;
        let channel = call(&self.shown, "open a channel", conn.create_channel()).await?;
        Ok((generation, channel))
    }

    fn queue_args(&self, mut args: FieldTable) -> FieldTable {
        if let Some(idle) = self.options.expire_idle {
            args.insert(
                "x-expires".into(),
                AMQPValue::LongLongInt(i64::try_from(idle.as_millis()).unwrap_or(i64::MAX)),
            );
        }
        args
    }

    pub(crate) async fn declare_exchange(
        &self,
        channel: &Channel,
        exchange: &str,
    ) -> TransportResult<()> {
        call(
            &self.shown,
            "declare the topic exchange",
            channel.exchange_declare(
                short("the exchange", exchange)?,
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    auto_delete: self.options.expire_idle.is_some(),
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
    }

    /// The group's dead-letter queue: a durable classic queue (browsing puts messages back in
    /// their place).
    pub(crate) async fn declare_dead(
        &self,
        channel: &Channel,
        names: &GroupNames,
    ) -> TransportResult<()> {
        call(
            &self.shown,
            "declare the dead-letter queue",
            channel.queue_declare(
                short("the queue", &names.dead)?,
                QueueDeclareOptions::durable(),
                self.queue_args(FieldTable::default()),
            ),
        )
        .await
        .map(|_| ())
    }

    /// Everything a group needs, on a channel of its own: the exchange, the dead-letter queue,
    /// the quorum queue (with `x-delivery-limit` = `max_deliveries` the first time it is
    /// declared; an existing queue declared with other arguments is used as it is) and its
    /// binding.
    pub(crate) async fn declare_group(
        &self,
        names: &GroupNames,
        max_deliveries: u32,
    ) -> TransportResult<()> {
        let (_, channel) = self.channel().await?;
        self.declare_exchange(&channel, &names.exchange).await?;
        self.declare_dead(&channel, names).await?;
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(max_deliveries)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from("")),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(LongString::from(names.dead.as_bytes())),
        );
        let queue = short("the queue", &names.queue)?;
        let declared = tokio::time::timeout(
            CALL_TIMEOUT,
            channel.queue_declare(
                queue.clone(),
                QueueDeclareOptions::durable(),
                self.queue_args(args),
            ),
        )
        .await;
        let channel = match declared {
            Ok(Ok(_)) => channel,
            Ok(Err(e)) if convert::is_precondition_failed(&e) => {
                tracing::warn!(
                    queue = %names.queue, error = %e,
                    "the group's queue exists with other arguments (another max_deliveries?); using it as it is"
                );
                let (_, channel) = self.channel().await?;
                call(
                    &self.shown,
                    "find the group's queue",
                    channel.queue_declare(
                        queue.clone(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    ),
                )
                .await?;
                channel
            }
            Ok(Err(e)) => return Err(error(&self.shown, "declare the group's queue", &e)),
            Err(_) => {
                return Err(unavailable(
                    &self.shown,
                    "declare the group's queue",
                    "no answer in time",
                ));
            }
        };
        call(
            &self.shown,
            "bind the group's queue",
            channel.queue_bind(
                queue,
                short("the exchange", &names.exchange)?,
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// A delay queue of `ms` milliseconds for the group: its copies are dead-lettered, once
    /// their TTL passed, into the group's queue.
    pub(crate) async fn declare_delay(
        &self,
        channel: &Channel,
        names: &GroupNames,
        ms: u64,
    ) -> TransportResult<String> {
        let name = names.delay(ms);
        let ttl = i64::try_from(ms).unwrap_or(i64::MAX);
        let idle = i64::try_from(DELAY_QUEUE_IDLE.as_millis()).unwrap_or(i64::MAX);
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        args.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(ttl.saturating_add(idle)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from("")),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(LongString::from(names.queue.as_bytes())),
        );
        call(
            &self.shown,
            "declare a delay queue",
            channel.queue_declare(
                short("the queue", &name)?,
                QueueDeclareOptions::durable(),
                args,
            ),
        )
        .await?;
        Ok(name)
    }
}

/// Publishes on `channel` (in confirm mode) and waits for every confirm; a nack or a returned
/// message is `Rejected`.
pub(crate) async fn publish_confirmed(
    url: &str,
    channel: &Channel,
    items: Vec<(
        ShortString,
        ShortString,
        bool,
        &[u8],
        lapin::BasicProperties,
    )>,
) -> TransportResult<()> {
    let mut confirms = Vec::with_capacity(items.len());
    for (exchange, routing_key, mandatory, body, props) in items {
        let confirm = call(
            url,
            "publish",
            channel.basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions {
                    mandatory,
                    ..Default::default()
                },
                body,
                props,
            ),
        )
        .await?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        let confirmation = call(url, "wait for the publisher confirm", confirm).await?;
        if confirmation.is_nack() {
            return Err(TransportError::Rejected {
                broker: BROKER,
                action: "publish",
                detail: "RabbitMQ nacked the message (it could not store it); publish it again"
                    .into(),
            });
        }
        if let Some(returned) = confirmation.take_message() {
            return Err(TransportError::Rejected {
                broker: BROKER,
                action: "publish",
                detail: format!(
                    "RabbitMQ returned the message: {} to {:?} ({}); the queue is gone: \
                     subscribe the group first",
                    returned.reply_text, returned.delivery.routing_key, returned.reply_code
                ),
            });
        }
    }
    Ok(())
}

/// A connection to RabbitMQ, as an eventfold [`Transport`].
///
/// Cloning is cheap and shares the connection; each subscriber opens a channel of its own on it.
#[derive(Clone, Debug)]
pub struct RabbitTransport {
    link: Arc<Link>,
}

impl RabbitTransport {
    /// Connects to `url` (`amqp://user:password@host:5672/vhost`; TLS is not built in). A
    /// RabbitMQ that cannot be reached is [`TransportError::Unavailable`] naming the URL without
    /// its password.
    pub async fn connect(url: &str) -> TransportResult<RabbitTransport> {
        RabbitTransport::connect_with(url, RabbitOptions::default()).await
    }

    /// [`connect`](Self::connect) with options.
    pub async fn connect_with(
        url: &str,
        options: RabbitOptions,
    ) -> TransportResult<RabbitTransport> {
        let shown = eventfold_transport::redact_url(url);
        if !url.starts_with("amqp://") {
            return Err(TransportError::Invalid(format!(
                "{shown:?} is not a RabbitMQ URL this build can use; use \
                 amqp://user:password@host:5672/vhost (no TLS)"
            )));
        }
        let link = Arc::new(Link {
            uri: url.to_owned(),
            shown,
            options,
            current: tokio::sync::Mutex::new((0, None)),
            publisher: tokio::sync::Mutex::new(None),
        });
        link.connection().await?;
        Ok(RabbitTransport { link })
    }

    /// The names of a group's queues.
    pub fn names(&self, topic: &Topic, group: &ConsumerGroup) -> GroupNames {
        GroupNames::new(topic, group)
    }

    /// A new channel on this transport's connection, for tools and tests.
    pub async fn channel(&self) -> TransportResult<Channel> {
        self.link.channel().await.map(|(_, c)| c)
    }

    async fn publish_batch(&self, topic: &Topic, batch: &[Message]) -> TransportResult<()> {
        let mut items = Vec::with_capacity(batch.len());
        for m in batch {
            let props = convert::properties_of(m, &[])?;
            let routing_key = short("the event type", m.event_type().unwrap_or(""))?;
            items.push((
                short("the exchange", topic.as_str())?,
                routing_key,
                false,
                m.payload.as_slice(),
                props,
            ));
        }
        let mut guard = self.link.publisher.lock().await;
        let (generation, _) = self.link.connection().await?;
        let stale = match &*guard {
            Some(p) => p.connection != generation || !p.channel.status().connected(),
            None => true,
        };
        if stale {
            let (connection, channel) = self.link.channel().await?;
            call(
                &self.link.shown,
                "turn on publisher confirms",
                channel.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
            *guard = Some(Publisher {
                connection,
                channel,
                exchanges: HashSet::new(),
            });
        }
        let Some(p) = guard.as_mut() else {
            return Err(unavailable(&self.link.shown, "publish", "no channel"));
        };
        if !p.exchanges.contains(topic.as_str()) {
            let declared = self.link.declare_exchange(&p.channel, topic.as_str()).await;
            if let Err(e) = declared {
                *guard = None;
                return Err(e);
            }
            p.exchanges.insert(topic.as_str().to_owned());
        }
        let result = publish_confirmed(&self.link.shown, &p.channel, items).await;
        if result.is_err() {
            // The channel may be closed or have confirms outstanding: start over on a new one.
            *guard = None;
        }
        result
    }
}

#[async_trait::async_trait]
impl Transport for RabbitTransport {
    fn broker(&self) -> &'static str {
        BROKER
    }

    fn features(&self) -> Features {
        Features {
            // Consumers of a queue share it and a retried message goes behind later ones.
            ordered_per_key: false,
            // One delay queue per delay: each copy waits its whole TTL.
            delayed_retry: true,
            // A queue gets what is published after it exists.
            history: false,
        }
    }

    async fn publish(&self, topic: &Topic, messages: &[Message]) -> TransportResult<()> {
        for batch in messages.chunks(PUBLISH_BATCH_MAX) {
            match self.publish_batch(topic, batch).await {
                // The exchange was deleted since this transport declared it (nothing of the
                // batch was routed): the failure dropped what was declared, so it is declared
                // again, once.
                Err(TransportError::Rejected { detail, .. }) if detail.contains("no exchange") => {
                    tracing::warn!(exchange = %topic, "the topic's exchange is gone; declaring it again");
                    self.publish_batch(topic, batch).await?;
                }
                other => other?,
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        settings: &SubscribeSettings,
    ) -> TransportResult<Box<dyn Subscriber>> {
        settings.validate()?;
        let names = GroupNames::new(topic, group);
        self.link
            .declare_group(&names, settings.max_deliveries)
            .await?;
        let mut sub = RabbitSubscriber::new(self.link.clone(), names, settings.clone());
        sub.open().await?;
        Ok(Box::new(sub))
    }

    async fn dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<Vec<DeadLetter>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let names = GroupNames::new(topic, group);
        let url = &self.link.shown;
        let (_, channel) = self.link.channel().await?;
        let queue = short("the queue", &names.dead)?;
        if let Err(e) = find(&channel, &queue).await {
            return if convert::is_not_found(&e) {
                Ok(Vec::new())
            } else {
                Err(error(url, "find the dead-letter queue", &e))
            };
        }
        let mut out = Vec::new();
        while out.len() < max {
            let got = call(
                url,
                "read the dead letters",
                channel.basic_get(queue.clone(), BasicGetOptions { no_ack: false }),
            )
            .await;
            let got = match got {
                Ok(Some(got)) => got,
                Ok(None) => break,
                Err(e) => {
                    let _ = channel.close(200, "browsed".into()).await;
                    return Err(e);
                }
            };
            let props = &got.delivery.properties;
            out.push(dead_letter_of(props, &got.delivery.data));
        }
        // Closing the channel gives every message read back to the queue, in its place.
        let _ = channel.close(200, "browsed".into()).await;
        Ok(out)
    }

    async fn replay_dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<usize> {
        let names = GroupNames::new(topic, group);
        let url = &self.link.shown;
        let (_, channel) = self.link.channel().await?;
        let queue = short("the queue", &names.dead)?;
        if let Err(e) = find(&channel, &queue).await {
            return if convert::is_not_found(&e) {
                Ok(0)
            } else {
                Err(error(url, "find the dead-letter queue", &e))
            };
        }
        call(
            url,
            "turn on publisher confirms",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        let target = short("the queue", &names.queue)?;
        let mut moved = 0;
        while moved < max {
            let Some(got) = call(
                url,
                "read the dead letters",
                channel.basic_get(queue.clone(), BasicGetOptions { no_ack: false }),
            )
            .await?
            else {
                break;
            };
            // A replay starts its attempts again: the copy carries the message only.
            let message = convert::message_of(&got.delivery.properties, &got.delivery.data);
            let props = convert::properties_of(&message, &[])?;
            publish_confirmed(
                url,
                &channel,
                vec![(
                    "".into(),
                    target.clone(),
                    true,
                    message.payload.as_slice(),
                    props,
                )],
            )
            .await?;
            call(
                url,
                "remove the replayed dead letter",
                channel.basic_ack(got.delivery.delivery_tag, BasicAckOptions::default()),
            )
            .await?;
            moved += 1;
        }
        let _ = channel.close(200, "replayed".into()).await;
        Ok(moved)
    }
}

/// Whether `queue` exists (a passive declare; a `NOT_FOUND` closes the channel).
async fn find(channel: &Channel, queue: &ShortString) -> lapin::Result<()> {
    channel
        .queue_declare(
            queue.clone(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|_| ())
}

/// A dead letter read from the queue: the reason the adapter wrote, or the one RabbitMQ gave
/// when the quorum queue's `x-delivery-limit` dead-lettered it.
fn dead_letter_of(props: &lapin::BasicProperties, body: &[u8]) -> DeadLetter {
    let message = convert::message_of(props, body);
    let (reason, attempts) = match convert::header(props, H_DEAD_REASON) {
        Some(reason) => (reason, convert::count(props, H_ATTEMPTS).unwrap_or(0)),
        None => {
            // RabbitMQ does not carry the delivery count onto the dead letter: unknown, 0.
            let why = convert::header(props, "x-first-death-reason")
                .unwrap_or_else(|| "unknown".to_owned());
            (
                format!(
                    "dead-lettered by RabbitMQ ({why}): delivered more than the queue's \
                     x-delivery-limit without an ack (a consumer crashed on it each time?)"
                ),
                0,
            )
        }
    };
    DeadLetter {
        message,
        reason,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_two_digits() {
        assert_eq!(delay_bucket(Duration::ZERO), 0);
        assert_eq!(delay_bucket(Duration::from_millis(7)), 7);
        assert_eq!(delay_bucket(Duration::from_millis(99)), 99);
        assert_eq!(delay_bucket(Duration::from_millis(200)), 200);
        assert_eq!(delay_bucket(Duration::from_millis(1234)), 1300);
        assert_eq!(delay_bucket(Duration::from_millis(60_001)), 61_000);
        assert_eq!(delay_bucket(Duration::from_secs(86_400)), 87_000_000);
    }

    #[test]
    fn names_follow_the_topic_and_group() {
        let n = GroupNames::new(
            &Topic::new("events").unwrap(),
            &ConsumerGroup::new("email").unwrap(),
        );
        assert_eq!(n.exchange, "events");
        assert_eq!(n.queue, "events.email");
        assert_eq!(n.dead, "events.email.dead");
        assert_eq!(n.delay(400), "events.email.retry.400");
    }
}
