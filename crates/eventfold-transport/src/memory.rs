//! A broker in this process's memory: the transport for tests and examples that need one
//! without a server, with the whole contract (groups, ack timeout, delayed retry, dead letters,
//! replay, history). Nothing survives the process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{
    ConsumerGroup, DeadLetter, Features, Incoming, Message, SubscribeSettings, Subscriber, Token,
    Topic, Transport, TransportError, TransportResult,
};

/// An in-memory broker; clones share it (a clone is "another connection").
#[derive(Clone, Debug, Default)]
pub struct MemoryTransport {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    topics: Mutex<HashMap<Topic, TopicState>>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct TopicState {
    log: Vec<Message>,
    groups: HashMap<ConsumerGroup, GroupState>,
}

#[derive(Debug, Default)]
struct GroupState {
    /// The next message of the log not yet delivered to the group.
    next: usize,
    /// Delivered and not settled: token sequence → (log index, subscriber, deadline).
    pending: BTreeMap<u64, Pending>,
    /// To deliver again: (when, log index).
    retry: BTreeSet<(Instant, usize)>,
    /// Deliveries made per log index.
    attempts: HashMap<usize, u32>,
    dead: Vec<(usize, String, u32)>,
    seq: u64,
}

#[derive(Debug)]
struct Pending {
    index: usize,
    subscriber: u64,
    deadline: Instant,
}

impl MemoryTransport {
    /// An empty broker.
    pub fn new() -> MemoryTransport {
        MemoryTransport::default()
    }
}

#[async_trait::async_trait]
impl Transport for MemoryTransport {
    fn broker(&self) -> &'static str {
        "memory"
    }

    fn features(&self) -> Features {
        Features {
            ordered_per_key: false,
            delayed_retry: true,
            history: true,
        }
    }

    async fn publish(&self, topic: &Topic, messages: &[Message]) -> TransportResult<()> {
        self.inner
            .topics
            .lock()
            .entry(topic.clone())
            .or_default()
            .log
            .extend_from_slice(messages);
        self.inner.wake.notify_waiters();
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        settings: &SubscribeSettings,
    ) -> TransportResult<Box<dyn Subscriber>> {
        settings.validate()?;
        self.inner
            .topics
            .lock()
            .entry(topic.clone())
            .or_default()
            .groups
            .entry(group.clone())
            .or_default();
        Ok(Box::new(MemorySubscriber {
            inner: self.inner.clone(),
            topic: topic.clone(),
            group: group.clone(),
            id: uuid_like(),
            ack_timeout: settings.ack_timeout,
        }))
    }

    async fn dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<Vec<DeadLetter>> {
        let topics = self.inner.topics.lock();
        let Some(t) = topics.get(topic) else {
            return Ok(Vec::new());
        };
        let Some(g) = t.groups.get(group) else {
            return Ok(Vec::new());
        };
        Ok(g.dead
            .iter()
            .take(max)
            .map(|(i, reason, attempts)| DeadLetter {
                message: t.log[*i].clone(),
                reason: reason.clone(),
                attempts: *attempts,
            })
            .collect())
    }

    async fn replay_dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<usize> {
        let mut topics = self.inner.topics.lock();
        let Some(g) = topics.get_mut(topic).and_then(|t| t.groups.get_mut(group)) else {
            return Ok(0);
        };
        let n = max.min(g.dead.len());
        let now = Instant::now();
        for (i, _, _) in g.dead.drain(..n).collect::<Vec<_>>() {
            g.attempts.insert(i, 0);
            g.retry.insert((now, i));
        }
        drop(topics);
        self.inner.wake.notify_waiters();
        Ok(n)
    }
}

/// A process-unique subscriber id.
fn uuid_like() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug)]
struct MemorySubscriber {
    inner: Arc<Inner>,
    topic: Topic,
    group: ConsumerGroup,
    id: u64,
    ack_timeout: Duration,
}

impl MemorySubscriber {
    /// Runs `f` on this subscriber's group.
    fn with_group<T>(&self, f: impl FnOnce(&mut GroupState, &[Message]) -> T) -> T {
        let mut topics = self.inner.topics.lock();
        let t = topics.entry(self.topic.clone()).or_default();
        let g = t.groups.entry(self.group.clone()).or_default();
        f(g, &t.log)
    }

    fn settle(&self, token: &Token) -> TransportResult<Option<usize>> {
        let seq: u64 = token
            .as_str()
            .parse()
            .map_err(|_| TransportError::Invalid(format!("{token:?} is not a memory token")))?;
        Ok(self.with_group(|g, _| g.pending.remove(&seq).map(|p| p.index)))
    }
}

#[async_trait::async_trait]
impl Subscriber for MemorySubscriber {
    async fn receive(&mut self) -> TransportResult<Incoming> {
        loop {
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let (got, next_due) = self.with_group(|g, log| {
                // Deliveries whose ack timeout passed go back to be delivered again.
                let expired: Vec<u64> = g
                    .pending
                    .iter()
                    .filter(|(_, p)| p.deadline <= now)
                    .map(|(s, _)| *s)
                    .collect();
                for s in expired {
                    if let Some(p) = g.pending.remove(&s) {
                        g.retry.insert((now, p.index));
                    }
                }
                let index = match g.retry.first() {
                    Some(&(at, i)) if at <= now => {
                        g.retry.pop_first();
                        Some(i)
                    }
                    _ if g.next < log.len() => {
                        g.next += 1;
                        Some(g.next - 1)
                    }
                    _ => None,
                };
                let Some(index) = index else {
                    let due = g
                        .retry
                        .first()
                        .map(|(at, _)| *at)
                        .into_iter()
                        .chain(g.pending.values().map(|p| p.deadline))
                        .min();
                    return (None, due);
                };
                g.seq += 1;
                let attempt = g.attempts.entry(index).or_insert(0);
                *attempt += 1;
                let attempt = *attempt;
                g.pending.insert(
                    g.seq,
                    Pending {
                        index,
                        subscriber: self.id,
                        deadline: now + self.ack_timeout,
                    },
                );
                let incoming = Incoming {
                    token: Token::new(g.seq.to_string()),
                    attempt,
                    message: log[index].clone(),
                };
                (Some(incoming), None)
            });
            if let Some(incoming) = got {
                return Ok(incoming);
            }
            match next_due {
                Some(at) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    async fn ack(&mut self, incoming: &Incoming) -> TransportResult<()> {
        self.settle(&incoming.token).map(|_| ())
    }

    async fn retry(&mut self, incoming: &Incoming, delay: Duration) -> TransportResult<()> {
        if let Some(index) = self.settle(&incoming.token)? {
            self.with_group(|g, _| g.retry.insert((Instant::now() + delay, index)));
            self.inner.wake.notify_waiters();
        }
        Ok(())
    }

    async fn dead_letter(&mut self, incoming: &Incoming, reason: &str) -> TransportResult<()> {
        if let Some(index) = self.settle(&incoming.token)? {
            self.with_group(|g, _| {
                let attempts = g.attempts.get(&index).copied().unwrap_or(0);
                g.dead.push((index, reason.to_owned(), attempts));
            });
        }
        Ok(())
    }

    async fn close(self: Box<Self>) -> TransportResult<()> {
        let now = Instant::now();
        let id = self.id;
        self.with_group(|g, _| {
            let mine: Vec<u64> = g
                .pending
                .iter()
                .filter(|(_, p)| p.subscriber == id)
                .map(|(s, _)| *s)
                .collect();
            for s in mine {
                if let Some(p) = g.pending.remove(&s) {
                    g.retry.insert((now, p.index));
                }
            }
        });
        self.inner.wake.notify_waiters();
        Ok(())
    }
}
