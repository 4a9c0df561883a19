//! eventfold's [`Transport`] on NATS JetStream (`docs/transports/nats.md` says where everything
//! goes).
//!
//! - A topic is a file-storage stream `{ns}_{topic}` on the subjects `{ns}.{topic}.>`, created
//!   on first use; an event is published on `{ns}.{topic}.e.{type}` (the event type's tokens,
//!   escaped where a character cannot be in a subject) so that consumers filter with wildcards,
//!   with the wire headers as NATS headers and `Nats-Msg-Id` = `ce_id` (JetStream's
//!   de-duplication). `publish` returns once every PubAck came back.
//! - A group is a durable pull consumer named after it (explicit acks, every message from the
//!   oldest, `ack_wait` = the ack timeout, no `max_deliver` limit: eventfold's `Consumer`
//!   dead-letters after `max_deliveries`). The attempt is JetStream's delivery count. Retry is
//!   `Nak` with a delay (JetStream redelivers after it), a dead letter is published to the
//!   topic's dead-letter stream `{ns}-dlq_{topic}` and the original `Term`inated.
//! - Replayed dead letters are published on the group's replay subject in that stream, which a
//!   second durable consumer of the group reads (NATS 2.9 allows one filter subject per
//!   consumer), so they reach that group only.

mod convert;
mod names;
mod subscriber;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use eventfold_transport::{
    ConsumerGroup, DeadLetter, Features, Message, SubscribeSettings, Subscriber, Topic, Transport,
    TransportError, TransportResult,
};
use parking_lot::Mutex;

pub use names::{NAMESPACE_BYTES_MAX, type_tokens};

use convert::{H_DEAD_ATTEMPTS, H_DEAD_REASON, H_MSG_ID};
use names::Names;

/// The broker's name in errors and metrics.
const BROKER: &str = "nats";
/// How long a connection attempt may take before NATS is called unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a JetStream request (a PubAck, an API call, a confirmed ack) is awaited before NATS
/// is called unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages published before their PubAcks are awaited: bounds the acks in flight of one
/// `publish` (and stays under the client's limit of awaited acks).
const PUBLISH_CHUNK: usize = 256;
/// The group's `max_ack_pending` is the subscriber's prefetch times this: room for this many
/// subscribers of the group holding a full prefetch each (the per-subscriber bound is kept by
/// the subscriber itself).
const ACK_PENDING_PER_PREFETCH: i64 = 64;
/// Most dead letters one `replay_dead_letters` or `dead_letters` call handles.
const DEAD_LETTERS_MAX: usize = 10_000;

/// How [`NatsTransport`] names what it creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsOptions {
    /// Starts every stream name and subject: `{namespace}_{topic}`, `{namespace}.{topic}.>`.
    /// 1..=32 ASCII letters and digits; `eventfold` by default. Two deployments on one NATS
    /// account keep apart by using different namespaces.
    pub namespace: String,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            namespace: "eventfold".to_owned(),
        }
    }
}

/// A connection to NATS JetStream carrying eventfold's topics and groups. Cheap to clone (one
/// connection, shared).
#[derive(Clone, Debug)]
pub struct NatsTransport {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    names: Names,
    /// The server's URL without credentials, for errors.
    url: String,
    /// Topics whose streams this connection made sure of.
    topics: Mutex<HashSet<Topic>>,
    /// Bumped on every (re)connection, so pulls waiting on a lost connection start again.
    connected: tokio::sync::watch::Receiver<u64>,
}

/// `url` without the user and password, if it has any.
fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let rest = match rest.rsplit_once('@') {
        Some((_, host)) => host,
        None => rest,
    };
    match scheme {
        Some(s) => format!("{s}://{rest}"),
        None => rest.to_owned(),
    }
}

impl NatsTransport {
    /// Connects to the NATS server at `url` (`nats://host:4222`, credentials in the URL are
    /// used and never repeated in errors), with the default [`NatsOptions`].
    pub async fn connect(url: &str) -> TransportResult<NatsTransport> {
        NatsTransport::connect_with(url, NatsOptions::default()).await
    }

    /// Connects with `options`. Fails with [`TransportError::Unavailable`] naming the URL when
    /// the server cannot be reached; once connected, the client reconnects by itself and the
    /// subscribers resume.
    pub async fn connect_with(url: &str, options: NatsOptions) -> TransportResult<NatsTransport> {
        let names = Names::new(&options.namespace)?;
        let shown = redact(url);
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let connecting = async_nats::ConnectOptions::new()
            .name("eventfold")
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .max_reconnects(None)
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Connected) {
                    tx.send_modify(|n| *n += 1);
                }
                std::future::ready(())
            })
            .connect(url);
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(TransportError::Unavailable {
                    broker: BROKER,
                    url: shown,
                    detail: format!("cannot connect: {e}; is nats-server running (with -js)?"),
                });
            }
            Err(_) => {
                return Err(TransportError::Unavailable {
                    broker: BROKER,
                    url: shown,
                    detail: format!("no answer within {CONNECT_TIMEOUT:?}"),
                });
            }
        };
        let js = jetstream::context::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .max_ack_inflight(PUBLISH_CHUNK * 4)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(NatsTransport {
            shared: Arc::new(Shared {
                client,
                js,
                names,
                url: shown,
                topics: Mutex::new(HashSet::new()),
                connected: rx,
            }),
        })
    }

    /// The JetStream context, for tools and tests that look at the streams directly.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.shared.js
    }

    /// The name of `topic`'s stream.
    pub fn stream_name(&self, topic: &Topic) -> String {
        self.shared.names.stream(topic)
    }

    /// The name of `topic`'s dead-letter stream.
    pub fn dead_letter_stream_name(&self, topic: &Topic) -> String {
        self.shared.names.dlq_stream(topic)
    }

    /// Whether `stream` is one of the streams this transport's namespace creates.
    pub fn owns_stream(&self, stream: &str) -> bool {
        self.shared.names.owns_stream(stream)
    }
}

impl Shared {
    pub(crate) fn unavailable(&self, detail: impl std::fmt::Display) -> TransportError {
        TransportError::Unavailable {
            broker: BROKER,
            url: self.url.clone(),
            detail: detail.to_string(),
        }
    }

    /// Unavailable when `transient` or the connection is down, else the server's refusal.
    pub(crate) fn failed(
        &self,
        action: &'static str,
        transient: bool,
        e: impl std::fmt::Display,
    ) -> TransportError {
        if transient || self.client.connection_state() != async_nats::connection::State::Connected {
            self.unavailable(format!("cannot {action}: {e}"))
        } else {
            TransportError::Rejected {
                broker: BROKER,
                action,
                detail: e.to_string(),
            }
        }
    }

    /// Fails fast while the connection is down (the client reconnects by itself).
    pub(crate) fn check_connected(&self) -> TransportResult<()> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(self.unavailable(format!(
                "the connection is {state:?}; the client reconnects by itself, retry later"
            ))),
        }
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub(crate) fn connected(&self) -> tokio::sync::watch::Receiver<u64> {
        self.connected.clone()
    }

    /// Creates the topic's two streams if they do not exist (once per connection and topic).
    async fn ensure_topic(&self, topic: &Topic) -> TransportResult<()> {
        if self.topics.lock().contains(topic) {
            return Ok(());
        }
        self.create_stream(stream::Config {
            name: self.names.stream(topic),
            subjects: vec![self.names.subjects(topic)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: 1,
            ..Default::default()
        })
        .await?;
        // Dead letters stay until replayed (deleted then) or consumed; replays until acked.
        self.create_stream(stream::Config {
            name: self.names.dlq_stream(topic),
            subjects: vec![self.names.dlq_subjects(topic)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            num_replicas: 1,
            ..Default::default()
        })
        .await?;
        self.topics.lock().insert(topic.clone());
        Ok(())
    }

    async fn create_stream(&self, config: stream::Config) -> TransportResult<stream::Stream> {
        let name = config.name.clone();
        self.js.get_or_create_stream(config).await.map_err(|e| {
            use async_nats::jetstream::context::CreateStreamErrorKind as K;
            let transient = matches!(e.kind(), K::TimedOut | K::JetStreamUnavailable);
            self.failed(
                "create a stream",
                transient,
                format!("the stream {name}: {e} (is JetStream enabled: nats-server -js?)"),
            )
        })
    }

    /// The topic's dead-letter stream, `None` if it does not exist.
    async fn dlq_stream(&self, topic: &Topic) -> TransportResult<Option<stream::Stream>> {
        self.check_connected()?;
        let name = self.names.dlq_stream(topic);
        match self.js.get_stream(&name).await {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                use async_nats::jetstream::context::GetStreamErrorKind as K;
                match e.kind() {
                    K::JetStream(j)
                        if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
                    {
                        Ok(None)
                    }
                    K::Request => Err(self.unavailable(format!("cannot read {name}: {e}"))),
                    _ => Err(self.failed("read the dead letters", false, e)),
                }
            }
        }
    }

    /// Publishes one prepared message and returns its PubAck future.
    pub(crate) async fn send(
        &self,
        subject: String,
        headers: async_nats::HeaderMap,
        payload: Bytes,
    ) -> TransportResult<jetstream::context::PublishAckFuture> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .headers(headers);
        self.js
            .send_publish(subject, publish)
            .await
            .map_err(|e| self.publish_error(e))
    }

    pub(crate) fn publish_error(&self, e: jetstream::context::PublishError) -> TransportError {
        use async_nats::jetstream::context::PublishErrorKind as K;
        match e.kind() {
            K::TimedOut | K::BrokenPipe => {
                self.unavailable(format!("a publish was not acknowledged: {e}"))
            }
            K::MaxPayloadExceeded => TransportError::Rejected {
                broker: BROKER,
                action: "publish",
                detail: format!(
                    "{e}: the message is larger than the server's max_payload (1 MiB by default); \
                     raise max_payload in nats-server's configuration or send smaller events"
                ),
            },
            K::StreamNotFound => TransportError::Rejected {
                broker: BROKER,
                action: "publish",
                detail: "no stream takes this subject (was the topic's stream deleted?): \
                         publish again to have it created"
                    .to_owned(),
            },
            _ => self.failed("publish", false, e),
        }
    }

    /// Publishes in order, awaiting the PubAcks of every chunk before sending the next.
    async fn publish_prepared(
        &self,
        prepared: &[(String, async_nats::HeaderMap, Bytes)],
    ) -> Result<(), jetstream::context::PublishError> {
        for chunk in prepared.chunks(PUBLISH_CHUNK) {
            let mut acks = Vec::with_capacity(chunk.len());
            for (subject, headers, payload) in chunk {
                let publish = jetstream::message::PublishMessage::build()
                    .payload(payload.clone())
                    .headers(headers.clone());
                acks.push(self.js.send_publish(subject.clone(), publish).await?);
            }
            for ack in acks {
                ack.await?;
            }
        }
        Ok(())
    }

    /// Reads up to `max` dead letters of the group, oldest first, with their sequence in the
    /// dead-letter stream.
    async fn read_dead(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<(Option<stream::Stream>, Vec<(u64, DeadLetter)>)> {
        let Some(stream) = self.dlq_stream(topic).await? else {
            return Ok((None, Vec::new()));
        };
        let subject = self.names.dead_subject(topic, group);
        let mut out = Vec::new();
        let mut seq = 1u64;
        while out.len() < max.min(DEAD_LETTERS_MAX) {
            let got = stream
                .raw_message_builder()
                .sequence(seq)
                .next_by_subject(subject.clone())
                .send()
                .await;
            let m = match got {
                Ok(m) => m,
                Err(e) => {
                    use async_nats::jetstream::stream::RawMessageErrorKind as K;
                    match e.kind() {
                        K::NoMessageFound => break,
                        K::Other => {
                            return Err(self.unavailable(format!("cannot read dead letters: {e}")));
                        }
                        _ => return Err(self.failed("read the dead letters", false, e)),
                    }
                }
            };
            seq = m.sequence + 1;
            let reason = convert::header(&m.headers, H_DEAD_REASON)
                .unwrap_or("")
                .to_owned();
            let attempts = convert::header(&m.headers, H_DEAD_ATTEMPTS)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            out.push((
                m.sequence,
                DeadLetter {
                    message: convert::message_of(Some(&m.headers), &m.payload),
                    reason,
                    attempts,
                },
            ));
        }
        Ok((Some(stream), out))
    }
}

#[async_trait::async_trait]
impl Transport for NatsTransport {
    fn broker(&self) -> &'static str {
        BROKER
    }

    fn features(&self) -> Features {
        Features {
            ordered_per_key: false,
            delayed_retry: true,
            history: true,
        }
    }

    async fn publish(&self, topic: &Topic, messages: &[Message]) -> TransportResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let s = &self.shared;
        // Everything is checked before anything is sent.
        let prepared = messages
            .iter()
            .map(|m| {
                Ok((
                    s.names.subject(topic, m.event_type()),
                    convert::headers_of(m)?,
                    Bytes::copy_from_slice(&m.payload),
                ))
            })
            .collect::<TransportResult<Vec<_>>>()?;
        s.check_connected()?;
        let mut recreated = false;
        loop {
            s.ensure_topic(topic).await?;
            match s.publish_prepared(&prepared).await {
                Err(e)
                    if !recreated
                        && e.kind() == jetstream::context::PublishErrorKind::StreamNotFound =>
                {
                    // The stream was deleted behind this connection's back: create it again
                    // and publish the batch again (what got through is de-duplicated).
                    s.topics.lock().remove(topic);
                    recreated = true;
                }
                Err(e) => return Err(s.publish_error(e)),
                Ok(()) => return Ok(()),
            }
        }
    }

    async fn subscribe(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        settings: &SubscribeSettings,
    ) -> TransportResult<Box<dyn Subscriber>> {
        settings.validate()?;
        let s = &self.shared;
        s.check_connected()?;
        s.ensure_topic(topic).await?;
        let ack_wait = settings.ack_timeout;
        let max_ack_pending = i64::try_from(settings.prefetch)
            .unwrap_or(i64::MAX)
            .saturating_mul(ACK_PENDING_PER_PREFETCH);
        let main = self
            .consumer(
                &s.names.stream(topic),
                consumer::pull::Config {
                    durable_name: Some(group.to_string()),
                    description: Some(format!("eventfold group {group} of topic {topic}")),
                    ack_policy: consumer::AckPolicy::Explicit,
                    deliver_policy: consumer::DeliverPolicy::All,
                    ack_wait,
                    max_deliver: -1,
                    max_ack_pending,
                    ..Default::default()
                },
            )
            .await?;
        let replay = self
            .consumer(
                &s.names.dlq_stream(topic),
                consumer::pull::Config {
                    durable_name: Some(group.to_string()),
                    description: Some(format!(
                        "eventfold group {group} of topic {topic}: replayed dead letters"
                    )),
                    filter_subject: s.names.replay_subject(topic, group),
                    ack_policy: consumer::AckPolicy::Explicit,
                    deliver_policy: consumer::DeliverPolicy::All,
                    ack_wait,
                    max_deliver: -1,
                    max_ack_pending,
                    ..Default::default()
                },
            )
            .await?;
        Ok(Box::new(subscriber::NatsSubscriber::start(
            self.shared.clone(),
            topic.clone(),
            group.clone(),
            settings,
            main,
            replay,
        )))
    }

    async fn dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<Vec<DeadLetter>> {
        let (_, dead) = self.shared.read_dead(topic, group, max).await?;
        Ok(dead.into_iter().map(|(_, d)| d).collect())
    }

    async fn replay_dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<usize> {
        let s = &self.shared;
        let (Some(stream), dead) = s.read_dead(topic, group, max).await? else {
            return Ok(0);
        };
        let subject = s.names.replay_subject(topic, group);
        let mut replayed = 0;
        for (seq, d) in dead {
            let mut headers = convert::headers_of(&d.message)?;
            // A replay interrupted before the delete and done again is de-duplicated.
            convert::insert(&mut headers, H_MSG_ID, &format!("replay-{seq}"))?;
            let ack = s
                .send(subject.clone(), headers, Bytes::from(d.message.payload))
                .await?;
            ack.await.map_err(|e| s.publish_error(e))?;
            stream.delete_message(seq).await.map_err(|e| {
                use async_nats::jetstream::stream::DeleteMessageErrorKind as K;
                s.failed(
                    "remove a replayed dead letter",
                    matches!(e.kind(), K::TimedOut | K::Request),
                    e,
                )
            })?;
            replayed += 1;
        }
        Ok(replayed)
    }
}

impl NatsTransport {
    /// Creates the durable pull consumer, or updates the settings JetStream lets change.
    async fn consumer(
        &self,
        stream: &str,
        config: consumer::pull::Config,
    ) -> TransportResult<consumer::PullConsumer> {
        let s = &self.shared;
        let name = config.durable_name.clone().unwrap_or_default();
        let stream_handle =
            s.js.get_stream_no_info(stream).await.map_err(|e| {
                s.failed("open a stream", false, format!("the stream {stream}: {e}"))
            })?;
        stream_handle.create_consumer(config).await.map_err(|e| {
            use async_nats::jetstream::stream::ConsumerErrorKind as K;
            s.failed(
                "create a consumer",
                matches!(e.kind(), K::TimedOut | K::Request),
                format!(
                    "the durable consumer {name} on {stream}: {e} (one created with other \
                     settings that JetStream cannot change: remove it with \
                     `nats consumer rm {stream} {name}`)"
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_an_error() {
        assert_eq!(redact("nats://user:secret@host:4222"), "nats://host:4222");
        assert_eq!(redact("nats://host:4222"), "nats://host:4222");
        assert_eq!(redact("token@127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(redact("127.0.0.1:4222"), "127.0.0.1:4222");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_and_named() {
        // Port 1 on localhost: nothing listens there.
        let err = NatsTransport::connect("nats://user:pw@127.0.0.1:1")
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(text.contains("nats://127.0.0.1:1"), "{text}");
        assert!(!text.contains("pw"), "{text}");
    }

    #[tokio::test]
    async fn a_bad_namespace_is_refused_before_connecting() {
        let err = NatsTransport::connect_with(
            "nats://127.0.0.1:1",
            NatsOptions {
                namespace: "a.b".into(),
            },
        )
        .await
        .unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("namespace"), "{err}");
    }
}
