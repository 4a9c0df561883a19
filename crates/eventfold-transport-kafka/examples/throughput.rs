//! Rough figures for the Kafka transport, printed as a table: publishing in batches, and
//! consuming (receive + ack, through `Consumer`) with 1 and 4 subscribers of one group. Not a
//! test. Run with
//! `cargo run --release -p eventfold-transport-kafka --example throughput [-- EVENTS]`
//! against `EVENTFOLD_KAFKA_BOOTSTRAP` (host:port,...), or, when it is not set, against
//! librdkafka's in-process mock cluster (whose figures say little about a real cluster: it keeps
//! everything in memory, in the same process, and forming a group waits about the session
//! timeout, 30 s here with the default ack timeout, when several members join at once).

use std::time::{Duration, Instant};

use eventfold_core::{
    ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName,
    Timestamp,
};
use eventfold_transport::{Backoff, Consumer, ConsumerGroup, SubscribeSettings, Topic};
use eventfold_transport_kafka::KafkaTransport;

const BATCH: usize = 500;
const DATA_BYTES: usize = 256;

fn events(n: usize) -> Vec<RecordedEvent> {
    (0..n)
        .map(|i| RecordedEvent {
            id: EventId::new_v7(),
            stream: StreamName::new(format!("order-{}", i % 100)).expect("stream"),
            event_type: EventType::new("order.placed").expect("type"),
            revision: Revision(i as u64 / 100),
            position: Position(i as u64),
            timestamp: Timestamp::now(),
            schema_version: 1,
            content_type: ContentType::json(),
            data: vec![b'x'; DATA_BYTES],
            metadata: Metadata::new(),
        })
        .collect()
}

async fn consume(
    t: &KafkaTransport,
    topic: &Topic,
    group: &ConsumerGroup,
    n: usize,
    subscribers: usize,
) -> (Duration, Duration) {
    let settings = SubscribeSettings {
        prefetch: 256,
        ..SubscribeSettings::default()
    };
    let mut consumers = Vec::new();
    for _ in 0..subscribers {
        consumers.push(
            Consumer::open(t, topic, group, &settings, Backoff::default())
                .await
                .expect("consumer"),
        );
    }
    let left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(n));
    let opened = Instant::now();
    let first: std::sync::Arc<std::sync::OnceLock<Instant>> = Default::default();
    let tasks: Vec<_> = consumers
        .into_iter()
        .map(|mut c| {
            let left = left.clone();
            let first = first.clone();
            tokio::spawn(async move {
                use std::sync::atomic::Ordering;
                while left.load(Ordering::Relaxed) > 0 {
                    match tokio::time::timeout(Duration::from_millis(500), c.next()).await {
                        Ok(d) => {
                            first.get_or_init(Instant::now);
                            c.ack(d.expect("next")).await.expect("ack");
                            left.fetch_sub(1, Ordering::Relaxed);
                        }
                        Err(_) => continue,
                    }
                }
                c.close().await.expect("close");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("consumer task");
    }
    let first = *first.get().expect("a delivery");
    (first - opened, first.elapsed())
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let (bootstrap, _mock) = match std::env::var("EVENTFOLD_KAFKA_BOOTSTRAP") {
        Ok(b) => (b, None),
        Err(_) => {
            let mock = rdkafka::mocking::MockCluster::new(3).expect("a mock cluster");
            (mock.bootstrap_servers(), Some(mock))
        }
    };
    let t = KafkaTransport::connect(&bootstrap).await.expect("Kafka");
    let what = if _mock.is_some() {
        "librdkafka's mock cluster (3 brokers, 4 partitions per topic)"
    } else {
        bootstrap.as_str()
    };
    println!("Kafka transport, {n} events of {DATA_BYTES} bytes per round, 100 keys, {what}");
    println!(
        "| subscribers | publish (batches of {BATCH}) | first delivery after subscribing | receive + ack, from the first |"
    );
    println!("|---|---|---|---|");
    for subscribers in [1, 4] {
        let topic = Topic::new(format!(
            "bench-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ))
        .expect("topic");
        let group = ConsumerGroup::new("bench").expect("group");
        let sent = events(n);
        let started = Instant::now();
        for batch in sent.chunks(BATCH) {
            eventfold_transport::publish_events(&t, &topic, batch)
                .await
                .expect("publish");
        }
        let publish = started.elapsed();
        let (join, consume) = consume(&t, &topic, &group, n, subscribers).await;
        println!(
            "| {subscribers} | {:.0} events/s | {:.1} s | {:.0} events/s |",
            n as f64 / publish.as_secs_f64(),
            join.as_secs_f64(),
            n as f64 / consume.as_secs_f64()
        );
    }
}
