//! One subscriber of a group: two pull loops (the group's consumer on the topic's stream, and its
//! consumer of replayed dead letters) feed one bounded channel; `receive` takes from it.
//!
//! At most `prefetch` deliveries are fetched and not yet settled: the main loop asks JetStream
//! only for as many as it holds permits for, a permit is given back when a delivery is settled
//! (or its ack timeout passed, since JetStream then delivers it again). The replay loop fetches
//! one message at a time and waits for a permit before handing it over, so one more message may
//! be held while it waits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use bytes::Bytes;
use eventfold_transport::{
    ConsumerGroup, Incoming, SubscribeSettings, Subscriber, Token, Topic, TransportError,
    TransportResult,
};
use futures::StreamExt as _;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Shared;
use crate::convert::{self, H_DEAD_ATTEMPTS, H_DEAD_REASON, H_MSG_ID};

/// How long one pull request waits at the server for messages. A pull lost with a connection is
/// replaced when the client reconnects; the client also gives up on one 5 s after this.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// The pause after a failed pull before the next, growing to [`PULL_RETRY_MAX`].
const PULL_RETRY_MIN: Duration = Duration::from_millis(100);
const PULL_RETRY_MAX: Duration = Duration::from_secs(2);

/// What the pull loops hand over: a delivery, or why pulling fails (once per failure streak; the
/// loops keep trying).
type Pulled = Result<jetstream::Message, String>;

/// A delivery fetched and not yet settled.
struct Held {
    message: jetstream::Message,
    /// After this JetStream delivers it again: its permit is given back.
    deadline: Instant,
}

pub(crate) struct NatsSubscriber {
    shared: Arc<Shared>,
    topic: Topic,
    group: ConsumerGroup,
    ack_timeout: Duration,
    rx: mpsc::Receiver<Pulled>,
    permits: Arc<Semaphore>,
    /// Received and not settled, by token (the reply subject).
    held: HashMap<String, Held>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for NatsSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSubscriber")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Drop for NatsSubscriber {
    fn drop(&mut self) {
        // Dropped without `close` (a crash): what it held comes back after the ack timeout.
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl NatsSubscriber {
    pub(crate) fn start(
        shared: Arc<Shared>,
        topic: Topic,
        group: ConsumerGroup,
        settings: &SubscribeSettings,
        main: PullConsumer,
        replay: PullConsumer,
    ) -> NatsSubscriber {
        let prefetch = settings.prefetch;
        let permits = Arc::new(Semaphore::new(prefetch));
        // Room for every permit plus the replay loop's one waiting message.
        let (tx, rx) = mpsc::channel(prefetch + 1);
        let tasks = vec![
            tokio::spawn(pull_main(
                main,
                Pipe::new(tx.clone(), shared.connected()),
                permits.clone(),
                prefetch,
            )),
            tokio::spawn(pull_replay(
                replay,
                Pipe::new(tx, shared.connected()),
                permits.clone(),
            )),
        ];
        NatsSubscriber {
            shared,
            topic,
            group,
            ack_timeout: settings.ack_timeout,
            rx,
            permits,
            held: HashMap::new(),
            tasks,
        }
    }

    /// Gives the permits of deliveries whose ack timeout passed back (JetStream redelivers
    /// them); returns when the next one is due.
    fn expire(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let before = self.held.len();
        self.held.retain(|_, h| h.deadline > now);
        self.permits.add_permits(before - self.held.len());
        self.held.values().map(|h| h.deadline).min()
    }

    /// Forgets a delivery; its permit goes back. `None` if not held (settled already, or
    /// expired).
    fn release(&mut self, token: &Token) -> Option<jetstream::Message> {
        let h = self.held.remove(token.as_str())?;
        self.permits.add_permits(1);
        Some(h.message)
    }

    /// Sends `kind` for the delivery and waits for JetStream's confirmation.
    async fn settle(&mut self, incoming: &Incoming, kind: AckKind) -> TransportResult<()> {
        self.release(&incoming.token);
        let reply = incoming.token.as_str().to_owned();
        if !reply.starts_with("$JS.ACK.") {
            return Err(TransportError::Invalid(format!(
                "{:?} is not a JetStream delivery token; settle only what this subscriber received",
                incoming.token
            )));
        }
        self.shared.check_connected()?;
        match self.shared.client().request(reply, Bytes::from(kind)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.shared.unavailable(format!(
                "JetStream did not confirm the settlement of a delivery: {e}"
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Subscriber for NatsSubscriber {
    async fn receive(&mut self) -> TransportResult<Incoming> {
        loop {
            let due = self.expire();
            let got = match due {
                Some(at) => tokio::select! {
                    m = self.rx.recv() => m,
                    () = tokio::time::sleep_until(at) => continue,
                },
                None => self.rx.recv().await,
            };
            let message = match got {
                None => return Err(TransportError::Closed { broker: "nats" }),
                Some(Err(detail)) => return Err(self.shared.unavailable(detail)),
                Some(Ok(m)) => m,
            };
            let Some(reply) = message.reply.as_ref().map(|r| r.to_string()) else {
                // Not a JetStream delivery (cannot happen on a pull consumer's inbox).
                self.permits.add_permits(1);
                continue;
            };
            let attempt = match message.info() {
                Ok(info) => u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX),
                Err(_) => 1,
            };
            let m = convert::message_of(message.headers.as_ref(), &message.payload);
            self.held.insert(
                reply.clone(),
                Held {
                    message,
                    deadline: Instant::now() + self.ack_timeout,
                },
            );
            return Ok(Incoming {
                token: Token::new(reply),
                attempt,
                message: m,
            });
        }
    }

    async fn ack(&mut self, incoming: &Incoming) -> TransportResult<()> {
        self.settle(incoming, AckKind::Ack).await
    }

    async fn retry(&mut self, incoming: &Incoming, delay: Duration) -> TransportResult<()> {
        self.settle(incoming, AckKind::Nak(Some(delay))).await
    }

    async fn dead_letter(&mut self, incoming: &Incoming, reason: &str) -> TransportResult<()> {
        let s = self.shared.clone();
        let mut headers = convert::headers_of(&incoming.message).or_else(|_| {
            // What cannot be sent back as it came is kept without its headers.
            Ok::<_, TransportError>(async_nats::HeaderMap::new())
        })?;
        convert::insert(&mut headers, H_DEAD_REASON, &convert::one_line(reason))?;
        convert::insert(&mut headers, H_DEAD_ATTEMPTS, &incoming.attempt.to_string())?;
        // The delivery's stream and sequence: dead-lettering it again after a crash between
        // the publish and the Term is de-duplicated.
        let id = match stream_sequence(incoming.token.as_str()) {
            Some((stream, seq)) => format!("dead-{}-{stream}-{seq}", self.group),
            None => format!("dead-{}-{}", self.group, incoming.token.as_str()),
        };
        convert::insert(&mut headers, H_MSG_ID, &id)?;
        s.check_connected()?;
        let ack = s
            .send(
                s.names.dead_subject(&self.topic, &self.group),
                headers,
                Bytes::from(incoming.message.payload.clone()),
            )
            .await?;
        ack.await.map_err(|e| s.publish_error(e))?;
        self.settle(incoming, AckKind::Term).await
    }

    async fn close(mut self: Box<Self>) -> TransportResult<()> {
        for t in &self.tasks {
            t.abort();
        }
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        // What was fetched and not settled goes back at once.
        let mut unsettled: Vec<jetstream::Message> =
            self.held.drain().map(|(_, h)| h.message).collect();
        while let Ok(m) = self.rx.try_recv() {
            if let Ok(m) = m {
                unsettled.push(m);
            }
        }
        for m in &unsettled {
            if let Err(e) = m.ack_with(AckKind::Nak(None)).await {
                tracing::debug!(error = %e, "a delivery was not given back on close; it comes back after the ack timeout");
            }
        }
        if !unsettled.is_empty() {
            // Best effort: without it they come back after the ack timeout.
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.shared.client().flush()).await;
        }
        Ok(())
    }
}

/// The stream and stream sequence of a delivery, from its `$JS.ACK.` reply subject (both forms
/// of ADR-15: `$JS.ACK.{stream}.{consumer}.{delivered}.{sseq}...` and, with a domain and account
/// hash first, `$JS.ACK.{domain}.{hash}.{stream}...`).
fn stream_sequence(reply: &str) -> Option<(&str, u64)> {
    let tokens: Vec<&str> = reply.strip_prefix("$JS.ACK.")?.split('.').collect();
    let first = match tokens.len() {
        7 => 0,
        n if n >= 9 => 2,
        _ => return None,
    };
    Some((tokens[first], tokens[first + 3].parse().ok()?))
}

/// Waits for at least one permit and takes all that are free (at most `max`).
async fn take_permits(permits: &Semaphore, max: usize) -> Option<usize> {
    let first = permits.acquire().await.ok()?;
    first.forget();
    let mut n = 1;
    while n < max {
        match permits.try_acquire() {
            Ok(p) => {
                p.forget();
                n += 1;
            }
            Err(_) => break,
        }
    }
    Some(n)
}

/// Where a pull loop hands its messages, and how it paces itself after failures.
struct Pipe {
    tx: mpsc::Sender<Pulled>,
    /// Bumped on every reconnection: a pull waiting on the old connection is lost.
    connected: tokio::sync::watch::Receiver<u64>,
    pause: Duration,
    /// Whether the current failure streak was reported.
    reported: bool,
}

impl Pipe {
    fn new(tx: mpsc::Sender<Pulled>, connected: tokio::sync::watch::Receiver<u64>) -> Pipe {
        Pipe {
            tx,
            connected,
            pause: PULL_RETRY_MIN,
            reported: false,
        }
    }

    /// Hands a delivery over; `false` once the subscriber is gone.
    async fn deliver(&mut self, m: jetstream::Message) -> bool {
        self.tx.send(Ok(m)).await.is_ok()
    }

    /// A pull went through: the failure streak is over.
    fn succeeded(&mut self) {
        self.pause = PULL_RETRY_MIN;
        self.reported = false;
    }

    /// A pull failed: report it (once per streak, without waiting for room: a full channel has
    /// deliveries to work on), then pause before the next, longer each time.
    async fn failed(&mut self, what: &str, e: impl std::fmt::Display) {
        tracing::debug!(error = %e, "{what}");
        if !self.reported {
            self.reported = true;
            let _ = self.tx.try_send(Err(format!(
                "{what}: {e}; the subscriber keeps trying (every {PULL_RETRY_MAX:?} at most)"
            )));
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(PULL_RETRY_MAX);
    }

    /// The next message of a pull, or `None` when it ended (or the connection it was sent on
    /// was lost).
    async fn next(
        &mut self,
        batch: &mut async_nats::jetstream::consumer::pull::Batch,
    ) -> Option<Result<jetstream::Message, async_nats::Error>> {
        tokio::select! {
            next = batch.next() => next,
            Ok(()) = self.connected.changed() => None,
        }
    }
}

/// Pulls the group's messages from the topic's stream.
async fn pull_main(
    consumer: PullConsumer,
    mut pipe: Pipe,
    permits: Arc<Semaphore>,
    prefetch: usize,
) {
    loop {
        let Some(n) = take_permits(&permits, prefetch).await else {
            return;
        };
        let mut received = 0;
        pipe.connected.mark_unchanged();
        match consumer
            .batch()
            .max_messages(n)
            .expires(PULL_EXPIRES)
            .messages()
            .await
        {
            Ok(mut batch) => {
                let mut error = None;
                while let Some(next) = pipe.next(&mut batch).await {
                    match next {
                        Ok(m) => {
                            received += 1;
                            if !pipe.deliver(m).await {
                                return;
                            }
                        }
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                drop(batch);
                permits.add_permits(n - received);
                match error {
                    Some(e) => pipe.failed("pulling the group's messages failed", e).await,
                    None => pipe.succeeded(),
                }
            }
            Err(e) => {
                permits.add_permits(n);
                pipe.failed("cannot pull the group's messages", e).await;
            }
        }
    }
}

/// Pulls the group's replayed dead letters, one at a time.
async fn pull_replay(consumer: PullConsumer, mut pipe: Pipe, permits: Arc<Semaphore>) {
    loop {
        pipe.connected.mark_unchanged();
        match consumer
            .batch()
            .max_messages(1)
            .expires(PULL_EXPIRES)
            .messages()
            .await
        {
            Ok(mut batch) => match pipe.next(&mut batch).await {
                Some(Ok(m)) => {
                    drop(batch);
                    pipe.succeeded();
                    match permits.acquire().await {
                        Ok(p) => p.forget(),
                        Err(_) => return,
                    }
                    if !pipe.deliver(m).await {
                        return;
                    }
                }
                Some(Err(e)) => {
                    pipe.failed("pulling the group's replayed dead letters failed", e)
                        .await
                }
                None => pipe.succeeded(),
            },
            Err(e) => {
                pipe.failed("cannot pull the group's replayed dead letters", e)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_subject_says_where_the_delivery_is_from() {
        assert_eq!(
            stream_sequence("$JS.ACK.eventfold_orders.email.3.42.40.1764000000000000000.7"),
            Some(("eventfold_orders", 42))
        );
        assert_eq!(
            stream_sequence(
                "$JS.ACK._.ACCHASH.eventfold_orders.email.3.42.40.1764000000000000000.7.tok"
            ),
            Some(("eventfold_orders", 42))
        );
        assert_eq!(stream_sequence("_INBOX.abc"), None);
        assert_eq!(stream_sequence("$JS.ACK.a.b.c"), None);
        assert_eq!(stream_sequence("$JS.ACK.s.c.1.x.1.1.1"), None);
    }
}
