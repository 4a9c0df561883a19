use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eventfold::core::{EventStore, Position};
use eventfold::testing::{append_events, check_checkpoint_store};
use eventfold::{
    BoxError, CheckpointStore, DomainEvent, Envelope, Projection, ProjectionError,
    ProjectionProcessor, ReadModel,
};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_postgres::tokio_postgres::Transaction;
use eventfold_postgres::{PostgresCheckpoints, PostgresProjection, PostgresReadModel};
use serde::{Deserialize, Serialize};

use crate::{client_in, drop_schema};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Added {
    n: i64,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "counter.")]
enum CounterEvent {
    Added(Added),
}

const POISON: i64 = 12;

/// One row per event (its id is the key, so applying one twice fails) and a running total,
/// each batch in two statements. While `poison` is set, a batch holding `n == POISON` fails
/// after its rows were written.
struct Totals {
    poison: Arc<AtomicBool>,
}

impl Projection for Totals {
    type Event = CounterEvent;
    fn name(&self) -> &str {
        "totals"
    }
}

#[async_trait::async_trait]
impl PostgresProjection for Totals {
    async fn migrate(&self, tx: &Transaction<'_>) -> Result<(), BoxError> {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS applied (event_id bytea PRIMARY KEY, n bigint NOT NULL);
             CREATE TABLE IF NOT EXISTS totals (id int PRIMARY KEY CHECK (id = 1),
                 count bigint NOT NULL, sum bigint NOT NULL);
             INSERT INTO totals VALUES (1, 0, 0) ON CONFLICT DO NOTHING;",
        )
        .await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope<CounterEvent>],
    ) -> Result<(), BoxError> {
        let ids: Vec<&[u8]> = events.iter().map(|e| e.id.as_bytes().as_slice()).collect();
        let ns: Vec<i64> = events
            .iter()
            .map(|e| match e.event {
                CounterEvent::Added(Added { n }) => n,
            })
            .collect();
        tx.execute(
            "INSERT INTO applied (event_id, n) SELECT * FROM UNNEST($1::bytea[], $2::bigint[])",
            &[&ids, &ns],
        )
        .await?;
        tx.execute(
            "UPDATE totals SET count = count + $1, sum = sum + $2",
            &[&(ns.len() as i64), &ns.iter().sum::<i64>()],
        )
        .await?;
        if self.poison.load(Ordering::SeqCst) && ns.contains(&POISON) {
            return Err(format!("refusing n = {POISON}").into());
        }
        Ok(())
    }

    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), BoxError> {
        tx.batch_execute("DELETE FROM applied; UPDATE totals SET count = 0, sum = 0;")
            .await?;
        Ok(())
    }
}

async fn add(store: &dyn EventStore, ns: impl IntoIterator<Item = i64>) -> Position {
    let events = ns.into_iter().map(|n| CounterEvent::Added(Added { n }));
    append_events(store, "counter-1", events).await.unwrap()
}

async fn totals(model: &PostgresReadModel<Totals>) -> (i64, i64, i64) {
    let c = model.client().await;
    let rows: i64 = c
        .query_one("SELECT count(*) FROM applied", &[])
        .await
        .unwrap()
        .get(0);
    let r = c
        .query_one("SELECT count, sum FROM totals", &[])
        .await
        .unwrap();
    (rows, r.get(0), r.get(1))
}

/// The store's directory, the store, the read model, the projection's poison switch and the
/// read model's schema.
type Setup = (
    tempfile::TempDir,
    Arc<dyn EventStore>,
    PostgresReadModel<Totals>,
    Arc<AtomicBool>,
    String,
);

/// A fresh store and read model (`poisoned`: the poison switch starts on), or `None` (skip)
/// when PostgreSQL is unreachable.
async fn setup(poisoned: bool) -> Option<Setup> {
    let (client, schema) = client_in(None).await?;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> =
        Arc::new(Engine::open(dir.path(), EngineOptions::for_tests()).unwrap());
    let poison = Arc::new(AtomicBool::new(poisoned));
    let model = PostgresReadModel::new(
        client,
        Totals {
            poison: poison.clone(),
        },
    )
    .await
    .unwrap();
    Some((dir, store, model, poison, schema))
}

#[tokio::test]
async fn catches_up_follows_live_and_a_new_connection_continues_from_the_checkpoint() {
    let Some((_dir, store, model, poison, schema)) = setup(false).await else {
        return;
    };
    let last = add(&*store, 1..=300).await;
    let handle = ProjectionProcessor::new(store.clone(), model.clone())
        .batch_size(128)
        .start();
    handle.wait_until(last).await.unwrap();
    let last = add(&*store, 301..=320).await;
    handle.wait_until(last).await.unwrap();
    handle.stop().await.unwrap();
    assert_eq!(totals(&model).await, (320, 320, (1..=320).sum()));
    drop(model);

    // A new connection (a restarted service): it resumes after the stored checkpoint.
    let (client, _) = client_in(Some(&schema)).await.unwrap();
    let model = PostgresReadModel::new(client, Totals { poison })
        .await
        .unwrap();
    assert_eq!(model.checkpoint().await.unwrap(), Some(last));
    let last = add(&*store, 321..=330).await;
    let handle = ProjectionProcessor::new(store.clone(), model.clone()).start();
    handle.wait_until(last).await.unwrap();
    handle.stop().await.unwrap();
    // Each event once: a second apply would break the primary key and stop the processor.
    assert_eq!(totals(&model).await, (330, 330, (1..=330).sum()));

    // Rebuild: emptied and replayed, with progress.
    let mut reported = Vec::new();
    let report = ProjectionProcessor::new(store.clone(), model.clone())
        .batch_size(100)
        .rebuild(|p| reported.push(p.events_done))
        .await
        .unwrap();
    assert_eq!(report.events, 330);
    assert_eq!(reported.last(), Some(&330));
    assert_eq!(totals(&model).await, (330, 330, (1..=330).sum()));
    drop(model);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn a_failing_batch_rolls_back_the_read_model_and_the_checkpoint_together() {
    let Some((_dir, store, model, poison, schema)) = setup(true).await else {
        return;
    };
    let last = add(&*store, 1..=20).await;
    let processor = ProjectionProcessor::new(store.clone(), model.clone()).batch_size(8);

    let err = processor.start().join().await.unwrap_err();
    let ProjectionError::Apply { first, .. } = &err else {
        panic!("expected an apply error, got {err}");
    };
    assert!(err.to_string().contains("refusing"), "{err}");
    // The failing batch's rows had been written; they are gone, and so is its checkpoint.
    let applied = *first as i64;
    assert!(applied < POISON);
    assert_eq!(
        totals(&model).await,
        (applied, applied, (1..=applied).sum())
    );
    assert_eq!(
        model.checkpoint().await.unwrap(),
        first.checked_sub(1).map(Position)
    );

    poison.store(false, Ordering::SeqCst);
    let handle = processor.start();
    handle.wait_until(last).await.unwrap();
    handle.stop().await.unwrap();
    assert_eq!(totals(&model).await, (20, 20, 210));
    drop(model);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn checkpoints_are_saved_loaded_and_reset() {
    let Some((client, schema)) = client_in(None).await else {
        return;
    };
    let checkpoints = PostgresCheckpoints::new(client).await.unwrap();
    check_checkpoint_store(&checkpoints).await;
    // Beyond the contract: PostgreSQL's bigint is signed.
    let err = checkpoints
        .save("relay", Position(u64::MAX))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("beyond"), "{err}");
    drop(checkpoints);
    drop_schema(&schema).await;
}

/// Fed from a broker (`MemoryTransport`): the store's events published late and twice are
/// applied once each in stream order, also through a second connection (a restart).
#[tokio::test]
async fn events_from_a_broker_are_applied_once_each_in_stream_order_across_a_reconnect() {
    use eventfold::core::{ReadAll, RecordedEvent, StreamName};
    use eventfold::transport::{ConsumerGroup, MemoryTransport, Topic, Transport, publish_events};
    use eventfold::{RetryPolicy, StreamReadModel, TransportProjection};

    let Some((_dir, store, model, poison, schema)) = setup(false).await else {
        return;
    };
    async fn consume(
        transport: &Arc<dyn Transport>,
        topic: &Topic,
        model: &PostgresReadModel<Totals>,
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
                .initial_delay(std::time::Duration::from_millis(10))
                .jitter(0.0),
        )
        .spawn();
        let stats = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            running.wait_until(|s| s.handled == deliveries),
        )
        .await
        .expect("handled within 20 s")
        .expect("running");
        running.stop().await.unwrap();
        assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    }
    let revision = |m: PostgresReadModel<Totals>| async move {
        m.stream_revision(&StreamName::new("counter-1").unwrap())
            .await
            .unwrap()
            .map(|r| r.0)
    };

    add(&*store, 1..=6).await;
    let events = store.read_all(ReadAll::forward(100)).await.unwrap().events;
    // Revision 0 comes last (the others wait for it), and everything twice.
    let mut published: Vec<RecordedEvent> = events[1..].to_vec();
    published.extend(events.iter().cloned());
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let topic = Topic::new("counters").unwrap();
    publish_events(&*transport, &topic, &published)
        .await
        .unwrap();
    consume(&transport, &topic, &model, published.len() as u64).await;
    // A second apply would break `applied`'s primary key and be dead-lettered.
    assert_eq!(totals(&model).await, (6, 6, 21));
    assert_eq!(revision(model.clone()).await, Some(5));

    // A new connection in the same schema; everything again, and one new event.
    let (client, _) = client_in(Some(&schema)).await.unwrap();
    let reconnected = PostgresReadModel::new(client, Totals { poison })
        .await
        .unwrap();
    add(&*store, [7]).await;
    let again = store.read_all(ReadAll::forward(100)).await.unwrap().events;
    publish_events(&*transport, &topic, &again).await.unwrap();
    consume(&transport, &topic, &reconnected, again.len() as u64).await;
    let result = (
        totals(&reconnected).await,
        revision(reconnected.clone()).await,
    );
    drop_schema(&schema).await;
    assert_eq!(result, ((7, 7, 28), Some(6)));
}
