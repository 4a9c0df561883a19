//! eventfold events on Kafka: [`KafkaTransport`] implements [`eventfold_transport::Transport`]
//! with Kafka's own machinery, through `rdkafka` (librdkafka).
//!
//! - A topic is the Kafka topic of the same name; a message is one record whose key is the
//!   message key (the stream, or `metadata.partition_key`), so one aggregate's events stay in
//!   one partition, in order; the headers are the wire headers (`ce_*`), the value the payload.
//!   The producer is idempotent (`enable.idempotence=true`, `acks=all`) and a publish answers
//!   once every delivery report came back.
//! - A group is a Kafka consumer group (`auto.offset.reset=earliest`, so a new group reads the
//!   history) with manual commits. Each partition has at most one delivery out at a time: the
//!   next record of a partition is handed out only once the previous one is settled (acked,
//!   dead-lettered), so a retried record holds its partition, and the committed offset is
//!   always "everything below it settled": a crash redelivers, never skips.
//! - A retry keeps the record in memory and hands it out again after the delay, before anything
//!   later of its partition. Attempt counts are therefore per process (a restart or a rebalance
//!   starts them at 1 again).
//! - Dead letters go to the topic `{topic}.{group}.dlq` (headers [`H_DLQ_REASON`],
//!   [`H_DLQ_ATTEMPTS`]); a replay produces them to `{topic}.{group}.replay`, which only that
//!   group's subscribers consume, and marks them replayed by committing the offsets of the group
//!   `{group}.dlq-replayed` on the dead-letter topic (Kafka cannot delete a record).
//!
//! `docs/transports/kafka.md` is the page for operators and for consumers in other languages.

mod subscriber;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventfold_transport::{
    ConsumerGroup, DeadLetter, Features, Message, SubscribeSettings, Subscriber, Topic, Transport,
    TransportError, TransportResult,
};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::subscriber::KafkaSubscriber;

/// The broker's name in errors and metrics.
pub const BROKER: &str = "kafka";
/// The header of a dead letter saying why it was dead-lettered.
pub const H_DLQ_REASON: &str = "eventfold_deadletter_reason";
/// The header of a dead letter saying how many deliveries were made before.
pub const H_DLQ_ATTEMPTS: &str = "eventfold_deadletter_attempts";
/// How long a metadata request, a committed-offsets request or a dead-letter read may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a missing topic is given to appear by the broker's auto-creation before it is
/// created with a `CreateTopics` request.
const TOPIC_AUTO_CREATE_WAIT: Duration = Duration::from_secs(1);

/// How long librdkafka keeps trying to deliver a produced record before the publish fails
/// (`message.timeout.ms`): a broker away longer makes `publish` answer `Unavailable`.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Most dead letters one `dead_letters` or `replay_dead_letters` call reads.
pub const DEAD_LETTERS_MAX: usize = 10_000;

/// The dead-letter topic of a group.
pub fn dead_letter_topic(topic: &Topic, group: &ConsumerGroup) -> String {
    format!("{topic}.{group}.dlq")
}

/// The replay topic of a group (only that group's subscribers consume it).
pub fn replay_topic(topic: &Topic, group: &ConsumerGroup) -> String {
    format!("{topic}.{group}.replay")
}

/// The consumer group whose committed offsets on the dead-letter topic mark what was replayed.
pub fn replayed_marker_group(group: &ConsumerGroup) -> String {
    format!("{group}.dlq-replayed")
}

/// A connection to a Kafka cluster, as an eventfold [`Transport`].
///
/// Cloning is cheap and shares the producer; each subscriber is a consumer of its own.
#[derive(Clone)]
pub struct KafkaTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KafkaTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTransport")
            .field("bootstrap_servers", &self.inner.servers)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) servers: String,
    producer: FutureProducer,
    /// Creates the topics a cluster does not create by itself.
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist (created by the broker's auto-creation if they did not).
    known: Mutex<HashSet<String>>,
}

impl KafkaTransport {
    /// Connects to the cluster at `bootstrap_servers` (`host:port[,host:port...]`, plaintext).
    /// A cluster that does not answer a metadata request within [`REQUEST_TIMEOUT`] is
    /// [`TransportError::Unavailable`] naming the servers.
    pub async fn connect(bootstrap_servers: &str) -> TransportResult<KafkaTransport> {
        let servers = bootstrap_servers.trim().to_owned();
        if servers.is_empty() {
            return Err(TransportError::Invalid(
                "no Kafka bootstrap servers given: use host:port[,host:port...]".into(),
            ));
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .map_err(|e| {
                TransportError::Invalid(format!(
                    "cannot set up a Kafka producer for {servers:?}: {e}"
                ))
            })?;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .create()
            .map_err(|e| {
                TransportError::Invalid(format!(
                    "cannot set up a Kafka admin client for {servers:?}: {e}"
                ))
            })?;
        let inner = Arc::new(Inner {
            servers,
            producer,
            admin,
            known: Mutex::new(HashSet::new()),
        });
        let probe = inner.clone();
        blocking(move || {
            probe
                .producer
                .client()
                .fetch_metadata(None, REQUEST_TIMEOUT)
                .map(|_| ())
                .map_err(|e| probe.unavailable(&e))
        })
        .await?;
        Ok(KafkaTransport { inner })
    }
}

impl Inner {
    pub(crate) fn unavailable(&self, e: &KafkaError) -> TransportError {
        TransportError::Unavailable {
            broker: BROKER,
            url: self.servers.clone(),
            detail: format!("{e} (check that the cluster is up and reachable; retry later)"),
        }
    }

    fn error(&self, action: &'static str, e: &KafkaError) -> TransportError {
        use rdkafka::types::RDKafkaErrorCode as C;
        let code = match e {
            KafkaError::MessageProduction(c) => Some(*c),
            _ => e.rdkafka_error_code(),
        };
        match code {
            Some(
                C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::InvalidTopic
                | C::InvalidRecord,
            ) => TransportError::Rejected {
                broker: BROKER,
                action,
                detail: e.to_string(),
            },
            _ => self.unavailable(e),
        }
    }

    /// Makes sure `topic` exists: a metadata request for it, which lets the broker auto-create
    /// it (`auto.create.topics.enable`); when that does not make it, a `CreateTopics` request
    /// with the broker's default partition count and replication factor (what auto-creation
    /// would have used; a cluster without auto-creation, such as tansu, needs it).
    pub(crate) async fn ensure_topic(self: &Arc<Self>, topic: &str) -> TransportResult<()> {
        if self.known.lock().expect("lock").contains(topic) {
            return Ok(());
        }
        if self.wait_for_topic(topic, TOPIC_AUTO_CREATE_WAIT).await? {
            return Ok(());
        }
        let new = NewTopic::new(topic, -1, TopicReplication::Fixed(-1));
        let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let created =
            tokio::time::timeout(REQUEST_TIMEOUT, self.admin.create_topics([&new], &opts))
                .await
                .map_err(|_| TransportError::Unavailable {
                    broker: BROKER,
                    url: self.servers.clone(),
                    detail: format!(
                        "creating topic {topic:?} got no answer within {REQUEST_TIMEOUT:?}"
                    ),
                })?
                .map_err(|e| self.error("create a topic", &e))?;
        for result in created {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(TransportError::Rejected {
                        broker: BROKER,
                        action: "create a topic",
                        detail: format!(
                            "topic {topic:?} does not exist and creating it failed ({code}): \
                             create it (with the partitions you want) or enable \
                             auto.create.topics.enable"
                        ),
                    });
                }
            }
        }
        if self.wait_for_topic(topic, REQUEST_TIMEOUT).await? {
            return Ok(());
        }
        Err(TransportError::Rejected {
            broker: BROKER,
            action: "create a topic",
            detail: format!(
                "topic {topic:?} was created but has no partitions within {REQUEST_TIMEOUT:?}"
            ),
        })
    }

    /// Asks for `topic`'s metadata until it has partitions (`true`) or `wait` has passed.
    async fn wait_for_topic(
        self: &Arc<Self>,
        topic: &str,
        wait: Duration,
    ) -> TransportResult<bool> {
        let me = self.clone();
        let name = topic.to_owned();
        blocking(move || {
            let deadline = Instant::now() + wait;
            loop {
                let md = me
                    .producer
                    .client()
                    .fetch_metadata(Some(&name), REQUEST_TIMEOUT)
                    .map_err(|e| me.unavailable(&e))?;
                let ready = md
                    .topics()
                    .iter()
                    .any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty());
                if ready {
                    me.known.lock().expect("lock").insert(name);
                    return Ok(true);
                }
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
    }

    /// Enqueues one record (waiting while librdkafka's queue is full).
    async fn enqueue(&self, topic: &str, m: &Message) -> TransportResult<DeliveryFuture> {
        let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
        for (k, v) in &m.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(topic)
            .key(m.key.as_bytes())
            .payload(&m.payload[..])
            .headers(headers);
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            match self.producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) if Instant::now() < deadline => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(self.error("publish", &e)),
            }
        }
    }

    /// Produces `messages` to `topic` in order and waits for every delivery report.
    pub(crate) async fn produce(
        self: &Arc<Self>,
        topic: &str,
        messages: &[Message],
    ) -> TransportResult<()> {
        self.ensure_topic(topic).await?;
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            pending.push(self.enqueue(topic, m).await?);
        }
        let mut first_error = None;
        for f in pending {
            let outcome = match f.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(self.error("publish", &e)),
                Err(_) => Err(TransportError::Unavailable {
                    broker: BROKER,
                    url: self.servers.clone(),
                    detail: "the producer was shut down before the delivery report".into(),
                }),
            };
            if let (Err(e), None) = (outcome, &first_error) {
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A consumer that is never a member of a group: it reads by assignment and commits as
    /// `group` (the replayed marker).
    fn standalone(&self, group: &str) -> TransportResult<BaseConsumer> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.servers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| self.unavailable(&e))
    }
}

/// Runs blocking librdkafka calls off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> TransportResult<T> + Send + 'static,
) -> TransportResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TransportError::Invalid(format!("a Kafka call panicked: {e}")))?
}

/// A record as a wire message: key and headers as UTF-8 (a byte that is not is replaced by
/// U+FFFD; such a record is not an eventfold event anyway), the first of repeated headers.
pub(crate) fn to_message<M: rdkafka::Message>(m: &M) -> Message {
    let key = m
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            if headers.iter().any(|(n, _)| n == h.key) {
                continue;
            }
            let v = h
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            headers.push((h.key.to_owned(), v));
        }
    }
    Message {
        key,
        headers,
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// One dead letter as read, with where it is.
struct Read {
    partition: i32,
    offset: i64,
    letter: DeadLetter,
}

impl KafkaTransport {
    /// Reads up to `max` of the group's dead letters not yet replayed, oldest first (per
    /// partition in order, partitions merged by timestamp, so each partition's part is a prefix).
    async fn read_dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<Vec<Read>> {
        let dlq = dead_letter_topic(topic, group);
        self.inner.ensure_topic(&dlq).await?;
        let inner = self.inner.clone();
        let marker = replayed_marker_group(group);
        let max = max.min(DEAD_LETTERS_MAX);
        blocking(move || {
            let c = inner.standalone(&marker)?;
            let md = c
                .fetch_metadata(Some(&dlq), REQUEST_TIMEOUT)
                .map_err(|e| inner.unavailable(&e))?;
            let partitions: Vec<i32> = md
                .topics()
                .iter()
                .filter(|t| t.name() == dlq)
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            let mut ask = TopicPartitionList::new();
            for p in &partitions {
                ask.add_partition(&dlq, *p);
            }
            let committed = c
                .committed_offsets(ask, REQUEST_TIMEOUT)
                .map_err(|e| inner.unavailable(&e))?;
            let mut assign = TopicPartitionList::new();
            let mut queues: std::collections::BTreeMap<i32, Vec<(i64, i64, DeadLetter)>> =
                Default::default();
            let mut ends = std::collections::BTreeMap::new();
            for p in &partitions {
                let (low, high) = c
                    .fetch_watermarks(&dlq, *p, REQUEST_TIMEOUT)
                    .map_err(|e| inner.unavailable(&e))?;
                let start = match committed.find_partition(&dlq, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= low => o,
                    _ => low,
                };
                if start < high {
                    assign
                        .add_partition_offset(&dlq, *p, Offset::Offset(start))
                        .map_err(|e| inner.unavailable(&e))?;
                    ends.insert(*p, high);
                    queues.insert(*p, Vec::new());
                }
            }
            if ends.is_empty() {
                return Ok(Vec::new());
            }
            c.assign(&assign).map_err(|e| inner.unavailable(&e))?;
            let deadline = Instant::now() + REQUEST_TIMEOUT;
            let done = |queues: &std::collections::BTreeMap<i32, Vec<(i64, i64, DeadLetter)>>| {
                ends.iter().all(|(p, end)| {
                    let q = &queues[p];
                    q.len() >= max || q.last().is_some_and(|(o, _, _)| o + 1 >= *end)
                })
            };
            while !done(&queues) {
                if Instant::now() >= deadline {
                    return Err(TransportError::Unavailable {
                        broker: BROKER,
                        url: inner.servers.clone(),
                        detail: format!(
                            "the dead letters of {dlq:?} could not be read within {REQUEST_TIMEOUT:?}; retry later"
                        ),
                    });
                }
                match c.poll(Duration::from_millis(100)) {
                    None => {}
                    Some(Err(e)) => return Err(inner.unavailable(&e)),
                    Some(Ok(m)) => {
                        let Some(q) = queues.get_mut(&m.partition()) else {
                            continue;
                        };
                        if q.len() >= max {
                            continue;
                        }
                        let mut message = to_message(&m);
                        let reason = take_header(&mut message, H_DLQ_REASON).unwrap_or_default();
                        let attempts = take_header(&mut message, H_DLQ_ATTEMPTS)
                            .and_then(|a| a.parse().ok())
                            .unwrap_or(0);
                        let ts = m.timestamp().to_millis().unwrap_or(0);
                        q.push((
                            m.offset(),
                            ts,
                            DeadLetter {
                                message,
                                reason,
                                attempts,
                            },
                        ));
                    }
                }
            }
            // Merge the partitions by timestamp, taking each partition's records in order.
            let mut heads: std::collections::BTreeMap<i32, std::collections::VecDeque<_>> =
                queues.into_iter().map(|(p, q)| (p, q.into())).collect();
            let mut out = Vec::new();
            while out.len() < max {
                let next = heads
                    .iter()
                    .filter_map(|(p, q)| q.front().map(|(_, ts, _)| (*ts, *p)))
                    .min();
                let Some((_, p)) = next else { break };
                let Some((offset, _, letter)) = heads.get_mut(&p).and_then(|q| q.pop_front())
                else {
                    break;
                };
                out.push(Read {
                    partition: p,
                    offset,
                    letter,
                });
            }
            Ok(out)
        })
        .await
    }
}

fn take_header(m: &mut Message, name: &str) -> Option<String> {
    let i = m.headers.iter().position(|(n, _)| n == name)?;
    Some(m.headers.remove(i).1)
}

#[async_trait::async_trait]
impl Transport for KafkaTransport {
    fn broker(&self) -> &'static str {
        BROKER
    }

    fn features(&self) -> Features {
        Features {
            ordered_per_key: true,
            delayed_retry: true,
            history: true,
        }
    }

    async fn publish(&self, topic: &Topic, messages: &[Message]) -> TransportResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        self.inner.produce(topic.as_str(), messages).await
    }

    async fn subscribe(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        settings: &SubscribeSettings,
    ) -> TransportResult<Box<dyn Subscriber>> {
        settings.validate()?;
        let replay = replay_topic(topic, group);
        self.inner.ensure_topic(topic.as_str()).await?;
        self.inner.ensure_topic(&replay).await?;
        let s = KafkaSubscriber::open(
            self.inner.clone(),
            vec![topic.as_str().to_owned(), replay],
            dead_letter_topic(topic, group),
            group.as_str(),
            settings,
        )?;
        Ok(Box::new(s))
    }

    async fn dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<Vec<DeadLetter>> {
        Ok(self
            .read_dead_letters(topic, group, max)
            .await?
            .into_iter()
            .map(|r| r.letter)
            .collect())
    }

    async fn replay_dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<usize> {
        let read = self.read_dead_letters(topic, group, max).await?;
        if read.is_empty() {
            return Ok(0);
        }
        let messages: Vec<Message> = read.iter().map(|r| r.letter.message.clone()).collect();
        self.inner
            .produce(&replay_topic(topic, group), &messages)
            .await?;
        let dlq = dead_letter_topic(topic, group);
        let mut marks = std::collections::BTreeMap::new();
        for r in &read {
            let e = marks.entry(r.partition).or_insert(r.offset);
            *e = (*e).max(r.offset);
        }
        let inner = self.inner.clone();
        let marker = replayed_marker_group(group);
        blocking(move || {
            let c = inner.standalone(&marker)?;
            let mut tpl = TopicPartitionList::new();
            for (p, o) in marks {
                tpl.add_partition_offset(&dlq, p, Offset::Offset(o + 1))
                    .map_err(|e| inner.unavailable(&e))?;
            }
            c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
                .map_err(|e| inner.unavailable(&e))
        })
        .await?;
        Ok(read.len())
    }
}
