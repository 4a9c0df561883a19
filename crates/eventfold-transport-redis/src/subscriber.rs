//! One consumer of a group: a Redis consumer with a name of its own, reading the topic's stream
//! and the group's replay stream with a blocking `XREADGROUP` on a connection of its own.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use eventfold_transport::{
    Incoming, RETRY_DELAY_MAX, SubscribeSettings, Subscriber, Token, TransportError,
    TransportResult,
};
use redis::Value;
use tokio::time::Instant;

use crate::conn::{Link, is_no_group};
use crate::fields::{self, int, text, unexpected};
use crate::keys::{GroupKeys, Tag};
use crate::scripts;

/// Longest one blocking `XREADGROUP` waits; bounds how long `close` waits for a read in flight.
pub(crate) const BLOCK_MAX: Duration = Duration::from_secs(1);
/// The idle time given to a closing subscriber's entries: longer than any ack timeout
/// (`RETRY_DELAY_MAX` is the longest allowed), so any live subscriber reclaims them at once.
const RELEASED_IDLE: Duration = Duration::from_secs(25 * 3600);
/// While Redis is unreachable, `receive` keeps reconnecting (with backoff) this long before it
/// returns the error; the next call starts over.
const OUTAGE_MAX: Duration = Duration::from_secs(30);
/// The first and the longest wait between reconnection attempts.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Outage {
    since: Instant,
    failures: u32,
    retry_at: Instant,
}

pub(crate) struct RedisSubscriber {
    /// The transport's connection, for settling (never blocked by a read).
    shared: Arc<Link>,
    /// This subscriber's own connection, for its reads.
    own: Link,
    keys: GroupKeys,
    consumer: String,
    settings: SubscribeSettings,
    /// Fetched, not yet handed out (at most `prefetch` from each stream), with when they were
    /// fetched.
    buffer: VecDeque<(Instant, Incoming)>,
    /// `XAUTOCLAIM` cursors on the topic stream and the replay stream.
    cursors: [String; 2],
    next_reclaim: Instant,
    outage: Option<Outage>,
}

impl std::fmt::Debug for RedisSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSubscriber")
            .field("stream", &self.keys.stream)
            .field("group", &self.keys.group)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl RedisSubscriber {
    pub(crate) fn new(
        shared: Arc<Link>,
        own: Link,
        keys: GroupKeys,
        consumer: String,
        settings: SubscribeSettings,
    ) -> RedisSubscriber {
        RedisSubscriber {
            shared,
            own,
            keys,
            consumer,
            settings,
            buffer: VecDeque::new(),
            cursors: ["0-0".to_owned(), "0-0".to_owned()],
            next_reclaim: Instant::now(),
            outage: None,
        }
    }

    /// How often idle entries of the group are looked for: a fraction of the ack timeout, so a
    /// crashed consumer's entries come back soon after it passed.
    fn reclaim_interval(&self) -> Duration {
        (self.settings.ack_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// One step: a buffered delivery, or a fetch into the buffer.
    async fn step(&mut self) -> TransportResult<Option<Incoming>> {
        while let Some((fetched, incoming)) = self.buffer.pop_front() {
            // One that waited in the buffer past its ack timeout may have been reclaimed by
            // another subscriber; if not, it is reclaimed like any other idle entry.
            if fetched.elapsed() < self.settings.ack_timeout {
                return Ok(Some(incoming));
            }
        }
        let now = Instant::now();
        let reclaim = now >= self.next_reclaim;
        let min_idle = if reclaim {
            u64::try_from(self.settings.ack_timeout.as_millis()).unwrap_or(u64::MAX)
        } else {
            0
        };
        let poll = scripts::eval(
            scripts::POLL,
            &[&self.keys.stream, &self.keys.replay, &self.keys.retry],
            &[
                self.keys.group.as_bytes(),
                self.consumer.as_bytes(),
                self.settings.prefetch.to_string().as_bytes(),
                min_idle.to_string().as_bytes(),
                self.cursors[0].as_bytes(),
                self.cursors[1].as_bytes(),
            ],
        );
        let answer: Value = self.own.query("poll", &poll).await?;
        if reclaim {
            self.next_reclaim = now + self.reclaim_interval();
        }
        let Value::Array(parts) = &answer else {
            return Err(unexpected("the poll script's answer", &answer));
        };
        let [entries, wait, c0, c1] = parts.as_slice() else {
            return Err(unexpected("the poll script's answer", &answer));
        };
        self.cursors = [text(c0)?, text(c1)?];
        let Value::Array(entries) = entries else {
            return Err(unexpected("the poll script's entries", entries));
        };
        let fetched = Instant::now();
        for e in entries {
            let Value::Array(e) = e else {
                return Err(unexpected("a claimed entry", e));
            };
            // `{tag, id, count, fields}`; fields are absent for an entry deleted meanwhile.
            let (tag, id, count, f) = match e.as_slice() {
                [tag, id, count, f] => (tag, id, count, f),
                [tag, id, count] => (tag, id, count, &Value::Nil),
                _ => return Err(unexpected("a claimed entry", &Value::Array(e.clone()))),
            };
            let tag = Tag::parse(&text(tag)?).unwrap_or(Tag::Main);
            let attempt = u32::try_from(int(count)?.max(1)).unwrap_or(u32::MAX);
            self.buffer
                .push_back((fetched, incoming(tag, &text(id)?, attempt, f)));
        }
        if !self.buffer.is_empty() {
            return Ok(None);
        }
        // Nothing due: wait for new entries, until the next retry is due or the next reclaim.
        let mut block = BLOCK_MAX.min(self.next_reclaim.saturating_duration_since(Instant::now()));
        if let Ok(ms) = u64::try_from(int(wait)?) {
            block = block.min(Duration::from_millis(ms));
        }
        // BLOCK 0 would wait forever.
        let block_ms = block.as_millis().max(1);
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(&self.keys.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.settings.prefetch)
            .arg("BLOCK")
            .arg(u64::try_from(block_ms).unwrap_or(1))
            .arg("STREAMS")
            .arg(&self.keys.stream)
            .arg(&self.keys.replay)
            .arg(">")
            .arg(">");
        let answer: Value = self.own.query("read", &read).await?;
        let fetched = Instant::now();
        for (stream, entries) in streams(&answer)? {
            let tag = if stream == self.keys.replay {
                Tag::Replay
            } else {
                Tag::Main
            };
            let Value::Array(entries) = entries else {
                return Err(unexpected("stream entries", entries));
            };
            for e in entries {
                let (id, f) = entry(e)?;
                self.buffer.push_back((fetched, incoming(tag, &id, 1, f)));
            }
        }
        Ok(None)
    }

    /// Creates the group on both streams (again, after Redis lost them).
    async fn create_groups(&self) -> TransportResult<()> {
        create_groups(&self.shared, &self.keys).await
    }

    fn parse_token(&self, token: &Token) -> TransportResult<(Tag, String)> {
        token
            .as_str()
            .split_once(':')
            .and_then(|(tag, id)| Some((Tag::parse(tag)?, id.to_owned())))
            .ok_or_else(|| {
                TransportError::Invalid(format!(
                    "{:?} is not a token of a Redis delivery; settle a delivery with the \
                     subscriber that received it",
                    token.as_str()
                ))
            })
    }
}

/// The group on the topic's stream and on its replay stream, both from the oldest entry.
pub(crate) async fn create_groups(link: &Link, keys: &GroupKeys) -> TransportResult<()> {
    for stream in [&keys.stream, &keys.replay] {
        let mut create = redis::cmd("XGROUP");
        create
            .arg("CREATE")
            .arg(stream)
            .arg(&keys.group)
            .arg("0")
            .arg("MKSTREAM");
        match link
            .query::<Value>("create the consumer group", &create)
            .await
        {
            Ok(_) => {}
            Err(TransportError::Rejected { detail, .. }) if detail.contains("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `[[stream, entries], ...]` of an `XREADGROUP` (nil when it timed out).
fn streams(answer: &Value) -> TransportResult<Vec<(String, &Value)>> {
    match answer {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => Ok((text(&pair[0])?, &pair[1])),
                other => Err(unexpected("[stream, entries]", other)),
            })
            .collect(),
        Value::Map(items) => items.iter().map(|(k, v)| Ok((text(k)?, v))).collect(),
        other => Err(unexpected("the streams read", other)),
    }
}

/// `[id, fields]`.
pub(crate) fn entry(e: &Value) -> TransportResult<(String, &Value)> {
    match e {
        Value::Array(pair) if pair.len() == 2 => Ok((text(&pair[0])?, &pair[1])),
        other => Err(unexpected("[id, fields]", other)),
    }
}

fn incoming(tag: Tag, id: &str, attempt: u32, f: &Value) -> Incoming {
    Incoming {
        token: Token::new(format!("{}:{id}", tag.as_str())),
        attempt,
        message: fields::decode(f).message,
    }
}

fn backoff(failures: u32) -> Duration {
    RECONNECT_BACKOFF_MIN
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(RECONNECT_BACKOFF_MAX)
}

#[async_trait::async_trait]
impl Subscriber for RedisSubscriber {
    async fn receive(&mut self) -> TransportResult<Incoming> {
        loop {
            if let Some(o) = &self.outage {
                tokio::time::sleep_until(o.retry_at).await;
            }
            match self.step().await {
                Ok(Some(incoming)) => {
                    self.outage = None;
                    return Ok(incoming);
                }
                Ok(None) => self.outage = None,
                Err(e) if e.is_retryable() => {
                    let now = Instant::now();
                    let o = self.outage.get_or_insert(Outage {
                        since: now,
                        failures: 0,
                        retry_at: now,
                    });
                    o.failures += 1;
                    o.retry_at = now + backoff(o.failures);
                    tracing::warn!(
                        error = %e, failures = o.failures,
                        "a Redis subscriber lost its connection; reconnecting"
                    );
                    if o.since.elapsed() >= OUTAGE_MAX {
                        return Err(e);
                    }
                }
                Err(e) if is_no_group(&e) => {
                    tracing::warn!(
                        stream = %self.keys.stream, group = %self.keys.group,
                        "the consumer group is gone (Redis lost its data?); creating it again"
                    );
                    self.create_groups().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn ack(&mut self, incoming: &Incoming) -> TransportResult<()> {
        let (tag, id) = self.parse_token(&incoming.token)?;
        let stream = self.keys.stream_of(tag);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XACK")
            .arg(stream)
            .arg(&self.keys.group)
            .arg(&id);
        if tag == Tag::Replay {
            // The replay stream is this group's alone: an acked entry is of no more use.
            pipe.cmd("XDEL").arg(stream).arg(&id);
        }
        self.shared.query::<Value>("ack", &pipe).await.map(|_| ())
    }

    async fn retry(&mut self, incoming: &Incoming, delay: Duration) -> TransportResult<()> {
        let (tag, id) = self.parse_token(&incoming.token)?;
        let delay_ms = u64::try_from(delay.min(RETRY_DELAY_MAX).as_millis()).unwrap_or(0);
        let cmd = scripts::eval(
            scripts::RETRY,
            &[self.keys.stream_of(tag), &self.keys.retry],
            &[
                self.keys.group.as_bytes(),
                incoming.token.as_str().as_bytes(),
                id.as_bytes(),
                delay_ms.to_string().as_bytes(),
            ],
        );
        self.shared
            .query::<Value>("schedule a retry", &cmd)
            .await
            .map(|_| ())
    }

    async fn dead_letter(&mut self, incoming: &Incoming, reason: &str) -> TransportResult<()> {
        let (tag, id) = self.parse_token(&incoming.token)?;
        let cmd = scripts::eval(
            scripts::DEAD_LETTER,
            &[self.keys.stream_of(tag), &self.keys.dead, &self.keys.retry],
            &[
                self.keys.group.as_bytes(),
                id.as_bytes(),
                reason.as_bytes(),
                if tag == Tag::Replay { b"1" } else { b"0" },
                incoming.token.as_str().as_bytes(),
            ],
        );
        self.shared
            .query::<Value>("dead-letter", &cmd)
            .await
            .map(|_| ())
    }

    async fn close(self: Box<Self>) -> TransportResult<()> {
        // A read still in flight on this subscriber's connection (a dropped `receive`) ends
        // before this answers: nothing is delivered to this consumer after it.
        self.own
            .query::<Value>("close", &redis::cmd("PING"))
            .await?;
        let idle_ms = RELEASED_IDLE.as_millis().to_string();
        let cmd = scripts::eval(
            scripts::RELEASE,
            &[&self.keys.stream, &self.keys.replay],
            &[
                self.keys.group.as_bytes(),
                self.consumer.as_bytes(),
                idle_ms.as_bytes(),
            ],
        );
        let released: Value = self.shared.query("close", &cmd).await?;
        tracing::debug!(consumer = %self.consumer, ?released, "a Redis subscriber closed");
        Ok(())
    }
}
