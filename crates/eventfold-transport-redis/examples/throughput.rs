//! Rough figures for the Redis transport on this machine, printed as a table: publishing in
//! batches, and consuming (receive + ack, through `Consumer`) with 1 and 4 subscribers of one
//! group. Not a test. Run with
//! `cargo run --release -p eventfold-transport-redis --example throughput [-- EVENTS]`
//! (`EVENTFOLD_REDIS_URL`, default redis://127.0.0.1:6379). Its keys are deleted at the end.

use std::time::{Duration, Instant};

use eventfold_core::{
    ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName,
    Timestamp,
};
use eventfold_transport::{Backoff, Consumer, ConsumerGroup, SubscribeSettings, Topic};
use eventfold_transport_redis::{GroupKeys, RedisTransport};

const BATCH: usize = 100;
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
    t: &RedisTransport,
    topic: &Topic,
    group: &ConsumerGroup,
    n: usize,
    subscribers: usize,
) -> Duration {
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
    let started = Instant::now();
    let tasks: Vec<_> = consumers
        .into_iter()
        .map(|mut c| {
            let left = left.clone();
            tokio::spawn(async move {
                use std::sync::atomic::Ordering;
                while left.load(Ordering::Relaxed) > 0 {
                    match tokio::time::timeout(Duration::from_millis(500), c.next()).await {
                        Ok(d) => {
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
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let url =
        std::env::var("EVENTFOLD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let t = RedisTransport::connect(&url).await.expect("Redis");
    let mut conn = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    println!("Redis transport, {n} events of {DATA_BYTES} bytes per round, {url}");
    println!("| subscribers | publish (batches of {BATCH}) | receive + ack |");
    println!("|---|---|---|");
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
        let consume = consume(&t, &topic, &group, n, subscribers).await;
        println!(
            "| {subscribers} | {:.0} events/s | {:.0} events/s |",
            n as f64 / publish.as_secs_f64(),
            n as f64 / consume.as_secs_f64()
        );
        let k = GroupKeys::new(&topic, &group);
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(&k.stream)
            .arg(&k.replay)
            .arg(&k.retry)
            .arg(&k.dead)
            .query_async(&mut conn)
            .await;
    }
}
