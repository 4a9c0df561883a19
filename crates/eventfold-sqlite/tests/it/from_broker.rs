//! A SQLite read model fed from a message broker (`TransportProjection` on the in-process
//! `MemoryTransport`): the store's events published late and twice, applied once each in stream
//! order, also after the database is closed and opened again.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use eventfold::core::{EventStore, ReadAll, RecordedEvent, StreamName};
use eventfold::testing::append_events;
use eventfold::transport::{ConsumerGroup, MemoryTransport, Topic, Transport, publish_events};
use eventfold::{RetryPolicy, StreamReadModel, TransportProjection};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_sqlite::{Sqlite, SqliteReadModel};

use crate::read_model::{Added, CounterEvent, Totals, totals};

async fn everything(store: &dyn EventStore) -> Vec<RecordedEvent> {
    store.read_all(ReadAll::forward(1000)).await.unwrap().events
}

async fn model(dir: &std::path::Path) -> SqliteReadModel<Totals> {
    let db = Sqlite::open(dir.join("read.db")).await.unwrap();
    SqliteReadModel::new(
        db,
        Totals {
            poison: Arc::new(AtomicBool::new(false)),
        },
    )
    .await
    .unwrap()
}

/// Consumes `topic` into `model` until `deliveries` were handled.
async fn consume(
    transport: &Arc<dyn Transport>,
    topic: &Topic,
    model: &SqliteReadModel<Totals>,
    deliveries: u64,
) {
    let mut running = TransportProjection::new(
        transport.clone(),
        topic.clone(),
        ConsumerGroup::new("totals").unwrap(),
        model.clone(),
    )
    .retry(
        RetryPolicy::new(8)
            .initial_delay(Duration::from_millis(10))
            .jitter(0.0),
    )
    .spawn();
    let stats = tokio::time::timeout(
        Duration::from_secs(20),
        running.wait_until(|s| s.handled == deliveries),
    )
    .await
    .expect("handled within 20 s")
    .expect("running");
    running.stop().await.unwrap();
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
}

async fn revision(model: &SqliteReadModel<Totals>, stream: &str) -> Option<u64> {
    model
        .stream_revision(&StreamName::new(stream).unwrap())
        .await
        .unwrap()
        .map(|r| r.0)
}

#[tokio::test]
async fn each_event_from_the_broker_is_applied_once_in_stream_order_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> =
        Arc::new(Engine::open(dir.path().join("events"), EngineOptions::for_tests()).unwrap());
    let added = |ns: std::ops::RangeInclusive<i64>| ns.map(|n| CounterEvent::Added(Added { n }));
    append_events(&*store, "counter-a", added(1..=5))
        .await
        .unwrap();
    append_events(&*store, "counter-b", added(6..=8))
        .await
        .unwrap();
    let events = everything(&*store).await;
    let is_b0 = |e: &RecordedEvent| e.stream.as_str() == "counter-b" && e.revision.0 == 0;
    // b's first event comes last (b's others wait for it), a's events twice.
    let mut published: Vec<RecordedEvent> = events.iter().filter(|e| !is_b0(e)).cloned().collect();
    published.extend(
        events
            .iter()
            .filter(|e| e.stream.as_str() == "counter-a")
            .cloned(),
    );
    published.extend(events.iter().filter(|e| is_b0(e)).cloned());
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let topic = Topic::new("counters").unwrap();
    publish_events(&*transport, &topic, &published)
        .await
        .unwrap();

    let first = model(dir.path()).await;
    consume(&transport, &topic, &first, published.len() as u64).await;
    // A second apply of an event would break `applied`'s primary key and be dead-lettered.
    assert_eq!(totals(&first).await, (8, 8, (1..=8).sum()));
    assert_eq!(revision(&first, "counter-a").await, Some(4));
    assert_eq!(revision(&first, "counter-b").await, Some(2));
    drop(first);

    // The database opened again; the broker gets everything again and two new events.
    let reopened = model(dir.path()).await;
    append_events(&*store, "counter-a", added(9..=10))
        .await
        .unwrap();
    let again = everything(&*store).await;
    publish_events(&*transport, &topic, &again).await.unwrap();
    consume(&transport, &topic, &reopened, again.len() as u64).await;
    assert_eq!(totals(&reopened).await, (10, 10, (1..=10).sum()));
    assert_eq!(revision(&reopened, "counter-a").await, Some(6));
}
