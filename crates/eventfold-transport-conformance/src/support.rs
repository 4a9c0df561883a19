//! What the cases share: the factory, fresh names, events, bounded waits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{
    ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName,
    Timestamp,
};
use eventfold_transport::{
    Backoff, Consumer, ConsumerGroup, Delivery, SubscribeSettings, Topic, Transport,
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// Opens a connection to the broker, `None` when it is unreachable.
type Open = Box<dyn Fn() -> BoxFuture<Option<Arc<dyn Transport>>> + Send + Sync>;
/// Restarts the broker.
type Restart = Box<dyn Fn() -> BoxFuture<()> + Send + Sync>;

/// Opens connections to the broker under test, and restarts it when the harness can.
pub struct Factory {
    open: Open,
    restart: Option<Restart>,
}

impl std::fmt::Debug for Factory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factory")
            .field("restart", &self.restart.is_some())
            .finish_non_exhaustive()
    }
}

impl Factory {
    /// See the [crate docs](crate).
    pub fn new<F, Fut, R, RFut>(open: F, restart: Option<R>) -> Factory
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Arc<dyn Transport>>> + Send + 'static,
        R: Fn() -> RFut + Send + Sync + 'static,
        RFut: Future<Output = ()> + Send + 'static,
    {
        Factory {
            open: Box::new(move || Box::pin(open())),
            restart: restart.map(|r| Box::new(move || Box::pin(r()) as BoxFuture<()>) as Restart),
        }
    }

    /// A new connection, `None` when the broker is unreachable (the case is then skipped).
    pub async fn open(&self) -> Option<Arc<dyn Transport>> {
        (self.open)().await
    }

    /// Restarts the broker, `false` when this harness cannot.
    pub async fn restart(&self) -> bool {
        match &self.restart {
            Some(r) => {
                r().await;
                true
            }
            None => false,
        }
    }
}

/// The longest any single wait of a case lasts.
pub const WAIT: Duration = Duration::from_secs(20);

/// A fresh topic.
pub fn topic() -> Topic {
    Topic::new(format!(
        "t-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ))
    .expect("a valid topic")
}

/// A fresh group.
pub fn group(name: &str) -> ConsumerGroup {
    ConsumerGroup::new(format!(
        "{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
    .expect("a valid group")
}

/// Settings for the cases: short ack timeout, so crashed deliveries come back quickly.
pub fn settings() -> SubscribeSettings {
    SubscribeSettings {
        max_deliveries: 5,
        ack_timeout: Duration::from_secs(2),
        prefetch: 16,
    }
}

/// A short backoff.
pub fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(200),
        multiplier: 2.0,
        max: Duration::from_secs(1),
    }
}

/// `n` events of `stream`, revisions from `first`, with metadata and a 256-byte payload.
pub fn events(stream: &str, first: u64, n: u64) -> Vec<RecordedEvent> {
    (first..first + n)
        .map(|r| {
            let mut metadata = Metadata::new();
            metadata.insert("correlation_id".into(), format!("corr-{stream}").into());
            metadata.insert("causation_id".into(), format!("cause-{r}").into());
            metadata.insert(
                "traceparent".into(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            );
            let data = serde_json::to_vec(&serde_json::json!({
                "stream": stream, "revision": r, "pad": "x".repeat(200)
            }))
            .expect("json");
            RecordedEvent {
                id: EventId::new_v7(),
                stream: StreamName::new(stream).expect("a valid stream"),
                event_type: EventType::new("order.placed").expect("a valid type"),
                revision: Revision(r),
                position: Position(r * 10 + 3),
                timestamp: Timestamp::now(),
                schema_version: 2,
                content_type: ContentType::json(),
                data,
                metadata,
                tags: Default::default(),
            }
        })
        .collect()
}

/// Opens a consumer, panicking with the reason on failure.
pub async fn consumer(t: &dyn Transport, topic: &Topic, group: &ConsumerGroup) -> Consumer {
    consumer_with(t, topic, group, &settings()).await
}

pub async fn consumer_with(
    t: &dyn Transport,
    topic: &Topic,
    group: &ConsumerGroup,
    settings: &SubscribeSettings,
) -> Consumer {
    tokio::time::timeout(WAIT, Consumer::open(t, topic, group, settings, backoff()))
        .await
        .expect("subscribe within the wait")
        .unwrap_or_else(|e| panic!("subscribe to {topic} as {group}: {e}"))
}

/// The next delivery within `wait`, `None` if none came.
pub async fn next_within(c: &mut Consumer, wait: Duration) -> Option<Delivery> {
    match tokio::time::timeout(wait, c.next()).await {
        Ok(Ok(d)) => Some(d),
        Ok(Err(e)) => panic!("receive: {e}"),
        Err(_) => None,
    }
}

/// The next delivery, failing the case when none comes within [`WAIT`].
pub async fn next(c: &mut Consumer) -> Delivery {
    next_within(c, WAIT)
        .await
        .expect("a delivery within the wait")
}

/// Publishes, failing the case on error.
pub async fn publish(t: &dyn Transport, topic: &Topic, events: &[RecordedEvent]) {
    tokio::time::timeout(WAIT, eventfold_transport::publish_events(t, topic, events))
        .await
        .expect("publish within the wait")
        .unwrap_or_else(|e| panic!("publish to {topic}: {e}"));
}

/// Prints why a case is skipped.
pub fn skip(case: &str, why: &str) {
    eprintln!("skipping {case}: {why}");
}
