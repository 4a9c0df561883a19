//! One subscriber: a member of the Kafka consumer group, with a task that polls it (so
//! rebalances are served even while the application is busy) into per-partition buffers.
//!
//! Each partition has at most one delivery out; the next record of a partition is handed out
//! once the previous one is settled, and then its offset + 1 is committed, so a committed offset
//! always means "everything below it settled".

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventfold_transport::{
    Incoming, Message, SubscribeSettings, Subscriber, Token, TransportError, TransportResult,
};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::{BROKER, H_DLQ_ATTEMPTS, H_DLQ_REASON, Inner, blocking, to_message};

/// Kafka brokers refuse session timeouts outside `group.min.session.timeout.ms` (6 s by
/// default) and `group.max.session.timeout.ms`; the ack timeout is clamped into this range.
pub const SESSION_TIMEOUT_MIN: Duration = Duration::from_secs(6);
pub const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(300);

type Tp = (String, i32);

/// How long `close` waits for a pending join to complete before it leaves anyway.
const CLOSE_JOIN_WAIT: Duration = Duration::from_secs(10);

/// How long one poll of the consumer blocks: also how soon a dropped subscriber's thread ends.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
enum Out {
    /// Handed out at this instant.
    Delivered(Instant),
    /// Retried: due at this instant.
    Waiting(Instant),
}

#[derive(Debug)]
struct Current {
    offset: i64,
    attempt: u32,
    message: Message,
    state: Out,
}

#[derive(Debug)]
struct Part {
    /// Changes with every assignment: a token of an earlier one settles nothing.
    epoch: u64,
    buf: VecDeque<(i64, Message)>,
    current: Option<Current>,
}

#[derive(Debug, Default)]
struct State {
    parts: BTreeMap<Tp, Part>,
    next_epoch: u64,
    buffered: usize,
    /// Round-robin start, so no partition starves the others.
    cursor: usize,
    /// The group coordinator has given this member an assignment (possibly empty): it is a
    /// member, and leaving sends a `LeaveGroup` the coordinator can match.
    joined: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
}

struct Ctx {
    shared: Arc<Shared>,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut st = self.shared.state.lock().expect("lock");
            for e in tpl.elements() {
                if let Some(p) = st.parts.remove(&(e.topic().to_owned(), e.partition())) {
                    st.buffered -= p.buf.len();
                }
            }
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut st = self.shared.state.lock().expect("lock");
            st.joined = true;
            for e in tpl.elements() {
                st.next_epoch += 1;
                let epoch = st.next_epoch;
                let old = st.parts.insert(
                    (e.topic().to_owned(), e.partition()),
                    Part {
                        epoch,
                        buf: VecDeque::new(),
                        current: None,
                    },
                );
                if let Some(old) = old {
                    st.buffered -= old.buf.len();
                }
            }
            drop(st);
            self.shared.wake.notify_one();
        }
    }
}

pub(crate) struct KafkaSubscriber {
    inner: Arc<Inner>,
    consumer: Arc<BaseConsumer<Ctx>>,
    shared: Arc<Shared>,
    poller: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    dlq: String,
    ack_timeout: Duration,
}

impl KafkaSubscriber {
    pub(crate) fn open(
        inner: Arc<Inner>,
        topics: Vec<String>,
        dlq: String,
        group: &str,
        settings: &SubscribeSettings,
    ) -> TransportResult<KafkaSubscriber> {
        let session = settings
            .ack_timeout
            .clamp(SESSION_TIMEOUT_MIN, SESSION_TIMEOUT_MAX);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        });
        let consumer: BaseConsumer<Ctx> = ClientConfig::new()
            .set("bootstrap.servers", &inner.servers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("queued.min.messages", settings.prefetch.to_string())
            // librdkafka waits this long before fetching again once its queue reached
            // `queued.min.messages` (1 s by default): short, since that queue is kept small.
            .set("fetch.queue.backoff.ms", "10")
            .set("session.timeout.ms", session.as_millis().to_string())
            .set(
                "heartbeat.interval.ms",
                (session.as_millis() / 3).to_string(),
            )
            .create_with_context(Ctx {
                shared: shared.clone(),
            })
            .map_err(|e| inner.unavailable(&e))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| inner.unavailable(&e))?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (consumer, shared, stop) = (consumer.clone(), shared.clone(), stop.clone());
            let prefetch = settings.prefetch;
            std::thread::Builder::new()
                .name("eventfold-kafka-poll".into())
                .spawn(move || poll(consumer, shared, prefetch, stop))
                .map_err(|e| {
                    TransportError::Invalid(format!("cannot start a Kafka polling thread: {e}"))
                })?
        };
        let poller = Some(poller);
        Ok(KafkaSubscriber {
            inner,
            consumer,
            shared,
            poller,
            stop,
            dlq,
            ack_timeout: settings.ack_timeout,
        })
    }

    fn closed() -> TransportError {
        TransportError::Closed { broker: BROKER }
    }

    /// The next delivery that is due, or when to look again.
    fn take(&self) -> Result<Incoming, Option<Instant>> {
        let mut st = self.shared.state.lock().expect("lock");
        let now = Instant::now();
        let n = st.parts.len();
        let start = st.cursor;
        let mut wake: Option<Instant> = None;
        let mut found = None;
        let keys: Vec<Tp> = st.parts.keys().cloned().collect();
        for i in 0..n {
            let tp = &keys[(start + i) % n];
            let State {
                parts, buffered, ..
            } = &mut *st;
            let Some(part) = parts.get_mut(tp) else {
                continue;
            };
            match &mut part.current {
                None => {
                    let Some((offset, message)) = part.buf.pop_front() else {
                        continue;
                    };
                    *buffered -= 1;
                    part.current = Some(Current {
                        offset,
                        attempt: 1,
                        message,
                        state: Out::Delivered(now),
                    });
                }
                Some(c) => {
                    let due = match c.state {
                        Out::Waiting(at) => at,
                        Out::Delivered(at) => at + self.ack_timeout,
                    };
                    if due > now {
                        wake = Some(wake.map_or(due, |w| w.min(due)));
                        continue;
                    }
                    c.attempt = c.attempt.saturating_add(1);
                    c.state = Out::Delivered(now);
                }
            }
            let c = part.current.as_ref().expect("just set");
            found = Some(Incoming {
                token: Token::new(format!("{}:{}:{}:{}", part.epoch, tp.1, c.offset, tp.0)),
                attempt: c.attempt,
                message: c.message.clone(),
            });
            st.cursor = (start + i + 1) % n.max(1);
            break;
        }
        drop(st);
        found.ok_or(wake)
    }

    /// Parses a token: (topic, partition, offset, epoch).
    fn parse(token: &Token) -> Option<(String, i32, i64, u64)> {
        let mut it = token.as_str().splitn(4, ':');
        let epoch = it.next()?.parse().ok()?;
        let p = it.next()?.parse().ok()?;
        let o = it.next()?.parse().ok()?;
        Some((it.next()?.to_owned(), p, o, epoch))
    }

    /// Applies `f` to the current delivery the token names, if it still is current.
    fn with_current<T>(
        &self,
        incoming: &Incoming,
        f: impl FnOnce(&mut Part) -> T,
    ) -> TransportResult<Option<T>> {
        let Some((t, p, o, epoch)) = Self::parse(&incoming.token) else {
            return Err(TransportError::Invalid(format!(
                "{:?} is not a token of the Kafka transport",
                incoming.token.as_str()
            )));
        };
        let mut st = self.shared.state.lock().expect("lock");
        Ok(match st.parts.get_mut(&(t, p)) {
            Some(part)
                if part.epoch == epoch && part.current.as_ref().is_some_and(|c| c.offset == o) =>
            {
                Some(f(part))
            }
            // Revoked (another member has it now) or already settled: nothing to do.
            _ => None,
        })
    }

    /// Settles the delivery: the partition's next record may go out, its offset is committed.
    fn settle(&self, incoming: &Incoming) -> TransportResult<()> {
        let settled = self.with_current(incoming, |part| part.current.take().map(|c| c.offset))?;
        if let Some(Some(offset)) = settled {
            let (t, p, _, _) = Self::parse(&incoming.token).expect("parsed above");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&t, p, Offset::Offset(offset + 1))
                .map_err(|e| self.inner.unavailable(&e))?;
            // Asynchronous: a commit lost (a crash right now) means a redelivery, never a skip.
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(error = %e, "committing a Kafka offset failed; it will be redelivered");
            }
            self.shared.wake.notify_one();
        }
        Ok(())
    }
}

/// Polls the consumer (serving rebalances) into the partition buffers, on a thread of its own
/// until `stop`; it stops polling while `prefetch` records wait in the buffers.
fn poll(
    consumer: Arc<BaseConsumer<Ctx>>,
    shared: Arc<Shared>,
    prefetch: usize,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        if shared.state.lock().expect("lock").buffered >= prefetch {
            // Full: records stay in librdkafka's fetch queue (bounded by `queued.min.messages`)
            // until the application settles some; rebalances wait for the next poll.
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match consumer.poll(POLL_INTERVAL) {
            None => {}
            Some(Ok(m)) => {
                let tp = (m.topic().to_owned(), m.partition());
                let message = to_message(&m);
                let offset = m.offset();
                {
                    let mut st = shared.state.lock().expect("lock");
                    let State {
                        parts, buffered, ..
                    } = &mut *st;
                    if let Some(part) = parts.get_mut(&tp) {
                        part.buf.push_back((offset, message));
                        *buffered += 1;
                    }
                }
                shared.wake.notify_one();
            }
            Some(Err(e)) => {
                // librdkafka retries by itself (brokers away, rebalances); the application
                // keeps waiting in `receive` and gets the records once they flow again.
                tracing::warn!(error = %e, "Kafka consumer error");
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

impl Drop for KafkaSubscriber {
    fn drop(&mut self) {
        // The polling thread ends within `POLL_INTERVAL` and drops the consumer, which leaves
        // the group (a dropped subscriber behaves like a clean shutdown, its deliveries return).
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl Subscriber for KafkaSubscriber {
    async fn receive(&mut self) -> TransportResult<Incoming> {
        loop {
            if self
                .poller
                .as_ref()
                .is_none_or(std::thread::JoinHandle::is_finished)
            {
                return Err(Self::closed());
            }
            let wake = match self.take() {
                Ok(incoming) => return Ok(incoming),
                Err(wake) => wake,
            };
            let wait = wake
                .map(|w| w.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            let _ = tokio::time::timeout(wait, self.shared.wake.notified()).await;
        }
    }

    async fn ack(&mut self, incoming: &Incoming) -> TransportResult<()> {
        self.settle(incoming)
    }

    async fn retry(&mut self, incoming: &Incoming, delay: Duration) -> TransportResult<()> {
        let due = Instant::now() + delay;
        self.with_current(incoming, |part| {
            if let Some(c) = &mut part.current {
                c.state = Out::Waiting(due);
            }
        })?;
        self.shared.wake.notify_one();
        Ok(())
    }

    async fn dead_letter(&mut self, incoming: &Incoming, reason: &str) -> TransportResult<()> {
        let mut m = incoming.message.clone();
        m.headers
            .retain(|(n, _)| n != H_DLQ_REASON && n != H_DLQ_ATTEMPTS);
        m.headers.push((H_DLQ_REASON.to_owned(), reason.to_owned()));
        m.headers
            .push((H_DLQ_ATTEMPTS.to_owned(), incoming.attempt.to_string()));
        self.inner.produce(&self.dlq, &[m]).await?;
        self.settle(incoming)
    }

    async fn close(mut self: Box<Self>) -> TransportResult<()> {
        // A member closed while its JoinGroup is still pending leaves without a member id
        // (librdkafka logs "has joined=false" and sends no LeaveGroup): the coordinator keeps
        // it until its session times out, and the group's next rebalance waits for it. A
        // subscribe-then-close (how a group is created before anything is published) does
        // exactly that. So wait, bounded, until this member has joined, then leave.
        let deadline = Instant::now() + CLOSE_JOIN_WAIT;
        while !self.shared.state.lock().expect("lock").joined
            && Instant::now() < deadline
            && self.poller.as_ref().is_some_and(|p| !p.is_finished())
        {
            let _ = tokio::time::timeout(POLL_INTERVAL, self.shared.wake.notified()).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let poller = self.poller.take();
        let consumer = self.consumer.clone();
        drop(self);
        // Leaves the group cleanly (its partitions go to the others, from the committed
        // offsets); dropping the last handle closes the consumer, which blocks until it left.
        blocking(move || {
            if let Some(p) = poller {
                let _ = p.join();
            }
            consumer.unsubscribe();
            drop(consumer);
            Ok(())
        })
        .await
    }
}
