//! What the tests on the shared Redis share: the URL, the skip rule, and a transport whose keys
//! expire, so the shared server does not keep every run's random topics.

use std::time::Duration;

use eventfold_transport::{
    ConsumerGroup, DeadLetter, Features, Message, SubscribeSettings, Subscriber, Topic, Transport,
    TransportResult,
};
use eventfold_transport_redis::{GroupKeys, RedisTransport};

/// How long a test's keys outlive their last use through [`Expiring`]: far longer than a run.
const KEEP: Duration = Duration::from_secs(600);

pub fn url() -> String {
    std::env::var("EVENTFOLD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A transport to the shared Redis, `None` (printed) when it is unreachable; panics instead
/// under `EVENTFOLD_REQUIRE_SERVICES=1`.
pub async fn open() -> Option<Expiring> {
    let url = url();
    let transport = match RedisTransport::connect(&url).await {
        Ok(t) => t,
        Err(e) if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("EVENTFOLD_REQUIRE_SERVICES=1 but Redis is not usable: {e}")
        }
        Err(e) => {
            eprintln!("Redis is not usable, skipping: {e}");
            return None;
        }
    };
    let raw = redis::Client::open(url)
        .expect("the URL just worked")
        .get_multiplexed_async_connection()
        .await
        .expect("a second connection to the same Redis");
    Some(Expiring { transport, raw })
}

/// A [`RedisTransport`] that sets an expiry (`EXPIRE ... NX`) on the keys of every topic and
/// group it is used with (the dead-letter stream once it exists, when the dead letters are
/// read).
#[derive(Clone)]
pub struct Expiring {
    pub transport: RedisTransport,
    raw: redis::aio::MultiplexedConnection,
}

impl Expiring {
    async fn expire(&self, topic: &Topic, group: Option<&ConsumerGroup>) {
        let mut keys = Vec::new();
        match group {
            Some(g) => {
                let k = GroupKeys::new(topic, g);
                keys.extend([k.stream, k.replay, k.retry, k.dead]);
            }
            None => {
                keys.push(GroupKeys::new(topic, &ConsumerGroup::new("x").expect("a group")).stream)
            }
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("EXPIRE")
                .arg(key)
                .arg(KEEP.as_secs())
                .arg("NX")
                .ignore();
        }
        // Best effort: a key left without an expiry is only litter.
        let _: Result<(), _> = pipe.query_async(&mut self.raw.clone()).await;
    }
}

#[async_trait::async_trait]
impl Transport for Expiring {
    fn broker(&self) -> &'static str {
        self.transport.broker()
    }

    fn features(&self) -> Features {
        self.transport.features()
    }

    async fn publish(&self, topic: &Topic, messages: &[Message]) -> TransportResult<()> {
        let r = self.transport.publish(topic, messages).await;
        self.expire(topic, None).await;
        r
    }

    async fn subscribe(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        settings: &SubscribeSettings,
    ) -> TransportResult<Box<dyn Subscriber>> {
        let r = self.transport.subscribe(topic, group, settings).await;
        self.expire(topic, Some(group)).await;
        r
    }

    async fn dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<Vec<DeadLetter>> {
        let r = self.transport.dead_letters(topic, group, max).await;
        self.expire(topic, Some(group)).await;
        r
    }

    async fn replay_dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<usize> {
        let r = self.transport.replay_dead_letters(topic, group, max).await;
        self.expire(topic, Some(group)).await;
        r
    }
}
