//! Rough figures for the RabbitMQ transport on this machine, printed as a table: publishing in
//! batches (publisher confirms), and consuming (receive + ack, through `Consumer`) with 1 and 4
//! subscribers of one group. Not a test. Run with
//! `cargo run --release -p eventfold-transport-rabbitmq --example throughput [-- EVENTS]`
//! (`EVENTFOLD_RABBITMQ_URL`, default amqp://guest:guest@127.0.0.1:5672/%2f). Its queues and
//! exchange are deleted at the end.

use std::time::{Duration, Instant};

use eventfold_core::{
    ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName,
    Timestamp,
};
use eventfold_transport::{Backoff, Consumer, ConsumerGroup, SubscribeSettings, Topic};
use eventfold_transport_rabbitmq::RabbitTransport;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};

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

async fn consume(consumers: Vec<Consumer>, n: usize) -> Duration {
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
    let url = std::env::var("EVENTFOLD_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let t = RabbitTransport::connect(&url).await.expect("RabbitMQ");
    println!("RabbitMQ transport, {n} events of {DATA_BYTES} bytes per round");
    println!("| subscribers | publish (batches of {BATCH}) | receive + ack |");
    println!("|---|---|---|");
    for subscribers in [1, 4] {
        let topic = Topic::new(format!(
            "bench-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ))
        .expect("topic");
        let group = ConsumerGroup::new("bench").expect("group");
        let settings = SubscribeSettings {
            prefetch: 256,
            ..SubscribeSettings::default()
        };
        // The group's queue exists before publishing (RabbitMQ keeps no history).
        let mut consumers = Vec::new();
        for _ in 0..subscribers {
            consumers.push(
                Consumer::open(&t, &topic, &group, &settings, Backoff::default())
                    .await
                    .expect("consumer"),
            );
        }
        let sent = events(n);
        let started = Instant::now();
        for batch in sent.chunks(BATCH) {
            eventfold_transport::publish_events(&t, &topic, batch)
                .await
                .expect("publish");
        }
        let publish = started.elapsed();
        let consume = consume(consumers, n).await;
        println!(
            "| {subscribers} | {:.0} events/s | {:.0} events/s |",
            n as f64 / publish.as_secs_f64(),
            n as f64 / consume.as_secs_f64()
        );
        let names = t.names(&topic, &group);
        let ch = t.channel().await.expect("channel");
        for q in [&names.queue, &names.dead] {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = ch
            .exchange_delete(topic.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}
