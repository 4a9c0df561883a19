//! eventfold events on Redis Streams: [`RedisTransport`] implements
//! [`eventfold_transport::Transport`] with Redis' own machinery.
//!
//! - A topic is the stream `eventfold:{topic}`; a message is one entry (`XADD`) with the fields
//!   `key`, one per header (`ce_id`, `ce_type`, ...) and `data` (the payload, binary-safe).
//!   A publish is one `MULTI`/`EXEC` of `XADD`s per [`PUBLISH_BATCH_MAX`] messages.
//! - A group is a Redis consumer group (created from `0`, so it reads the stream's history), on
//!   the topic's stream and on the group's own replay stream. Each subscriber is a consumer with
//!   a unique name and a connection of its own for its blocking `XREADGROUP`.
//! - The attempt is the entry's delivery count in the pending-entries list; ack is `XACK`; a
//!   crashed consumer's entries are taken over with `XAUTOCLAIM` once idle for the ack timeout.
//! - A retry schedules the pending entry in the group's retry set (a sorted set scored by when it
//!   is due, by the server's clock); a subscriber of that group claims it when due (`XCLAIM`).
//!   Nothing is added to the topic's stream, so other groups never see a retry.
//! - Dead letters are the group's stream `eventfold:{topic}:dead:{group}`; replay moves them to
//!   the group's replay stream, which only that group reads.
//!
//! `docs/transports/redis.md` is the page for operators and for consumers in other languages.

mod conn;
mod fields;
mod keys;
mod scripts;
mod subscriber;

pub use crate::keys::GroupKeys;

use std::sync::Arc;

use eventfold_transport::{
    ConsumerGroup, DeadLetter, Features, Message, SubscribeSettings, Subscriber, Topic, Transport,
    TransportError, TransportResult,
};
use redis::Value;

use crate::conn::{Link, RESPONSE_TIMEOUT};
use crate::subscriber::{BLOCK_MAX, RedisSubscriber, create_groups, entry};

/// The broker's name in errors and metrics.
pub const BROKER: &str = "redis";
/// Most messages in one `MULTI`/`EXEC` of a publish: a larger publish is several transactions,
/// in order (Redis buffers a whole transaction in memory before it runs it).
pub const PUBLISH_BATCH_MAX: usize = 1_000;
/// Most dead letters moved by one replay script (a script blocks the server while it runs).
pub const REPLAY_BATCH_MAX: usize = 1_000;

/// A connection to Redis, as an eventfold [`Transport`].
///
/// Cloning is cheap and shares the connection; each subscriber opens a connection of its own.
#[derive(Clone, Debug)]
pub struct RedisTransport {
    client: redis::Client,
    shared: Arc<Link>,
}

impl RedisTransport {
    /// Connects to `url` (`redis://[user[:password]@]host[:port][/db]` or
    /// `redis+unix:///path`; TLS is not built in). A Redis that cannot be reached is
    /// [`TransportError::Unavailable`] naming the URL without its password; each subscriber
    /// opens a connection of its own to the same URL.
    pub async fn connect(url: &str) -> TransportResult<RedisTransport> {
        let shown = eventfold_transport::redact_url(url);
        let client = redis::Client::open(url).map_err(|_| {
            TransportError::Invalid(format!(
                "{shown:?} is not a Redis URL this build can use; use \
                 redis://[user[:password]@]host[:port][/db] or redis+unix:///path (no TLS)"
            ))
        })?;
        let shared = Arc::new(Link::new(client.clone(), shown, RESPONSE_TIMEOUT));
        shared.open().await?;
        Ok(RedisTransport { client, shared })
    }
}

#[async_trait::async_trait]
impl Transport for RedisTransport {
    fn broker(&self) -> &'static str {
        BROKER
    }

    fn features(&self) -> Features {
        Features {
            // Subscribers of a group share its entries, and a retried entry comes back after
            // later ones: no order per key with retries.
            ordered_per_key: false,
            // The retry set holds an entry until the server's clock says it is due.
            delayed_retry: true,
            // A group starts at the stream's first entry.
            history: true,
        }
    }

    async fn publish(&self, topic: &Topic, messages: &[Message]) -> TransportResult<()> {
        for m in messages {
            fields::check(m)?;
        }
        let stream = keys::stream(topic);
        for batch in messages.chunks(PUBLISH_BATCH_MAX) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for m in batch {
                let mut xadd = redis::cmd("XADD");
                xadd.arg(&stream).arg("*");
                fields::push(&mut xadd, m);
                pipe.add_command(xadd);
            }
            self.shared.query::<Value>("publish", &pipe).await?;
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
        let keys = GroupKeys::new(topic, group);
        create_groups(&self.shared, &keys).await?;
        let own = Link::new(
            self.client.clone(),
            self.shared.url().to_owned(),
            BLOCK_MAX + RESPONSE_TIMEOUT,
        );
        own.open().await?;
        let consumer = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Ok(Box::new(RedisSubscriber::new(
            self.shared.clone(),
            own,
            keys,
            consumer,
            settings.clone(),
        )))
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
        let keys = GroupKeys::new(topic, group);
        let mut range = redis::cmd("XRANGE");
        range
            .arg(&keys.dead)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(max);
        let answer: Value = self.shared.query("read the dead letters", &range).await?;
        let Value::Array(entries) = &answer else {
            return Err(fields::unexpected("dead-letter entries", &answer));
        };
        entries
            .iter()
            .map(|e| {
                let (_, f) = entry(e)?;
                let d = fields::decode(f);
                Ok(DeadLetter {
                    message: d.message,
                    reason: d.reason.unwrap_or_default(),
                    attempts: d.attempts.unwrap_or(0),
                })
            })
            .collect()
    }

    async fn replay_dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<usize> {
        let keys = GroupKeys::new(topic, group);
        let mut moved = 0;
        while moved < max {
            let n = (max - moved).min(REPLAY_BATCH_MAX);
            let cmd = scripts::eval(
                scripts::REPLAY,
                &[&keys.dead, &keys.replay],
                &[n.to_string().as_bytes()],
            );
            let answer: Value = self.shared.query("replay dead letters", &cmd).await?;
            let done = usize::try_from(fields::int(&answer)?).unwrap_or(0);
            moved += done;
            if done < n {
                break;
            }
        }
        Ok(moved)
    }
}
