//! The idempotency window on PostgreSQL where the database matters: several stores (servers) on
//! one schema racing the same retry, and a schema of version 1 (before the window) migrated.

use std::sync::Arc;

use eventfold_core::{
    EventStore, EventType, ExpectedRevision, NewEvent, ReadStream, StoreError, StreamName,
};
use eventfold_store_postgres::{PostgresOptions, PostgresStore};
use tokio::sync::Barrier;

use crate::TestDb;

fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("a valid stream name")
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            NewEvent::json(
                EventType::new("placed").expect("a valid event type"),
                &serde_json::json!({ "n": i }),
            )
        })
        .collect()
}

fn options() -> PostgresOptions {
    PostgresOptions {
        pool_size: 4,
        ..PostgresOptions::default()
    }
}

async fn ids_of(store: &PostgresStore, s: &StreamName) -> Vec<eventfold_core::EventId> {
    store
        .read_stream(s, ReadStream::forward(1_000))
        .await
        .expect("read")
        .events
        .iter()
        .map(|e| e.id)
        .collect()
}

/// Two stores on one schema (two servers on one database), each with its own group writer,
/// send the same batch at once from several tasks, with other appends to the stream racing
/// too: the check is the database's, under the ordering lock, so exactly one copy writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_racing_the_same_retry_write_it_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let stores = [
        Arc::new(db.store(options()).await),
        Arc::new(db.store(options()).await),
    ];
    let s = stream("race-1");
    for round in 0..5 {
        let batch = events(1 + round % 3);
        let barrier = Arc::new(Barrier::new(10));
        let tasks: Vec<_> = (0..10)
            .map(|k| {
                let store = stores[k % 2].clone();
                let (s, barrier) = (s.clone(), barrier.clone());
                let batch = if k < 8 { batch.clone() } else { events(1) };
                tokio::spawn(async move {
                    barrier.wait().await;
                    (k < 8, store.append(&s, ExpectedRevision::Any, batch).await)
                })
            })
            .collect();
        let mut copies = Vec::new();
        for t in tasks {
            let (copy, r) = t.await.expect("task");
            let r = r.expect("append");
            if copy {
                copies.push(r);
            } else {
                assert!(!r.idempotent_replay);
            }
        }
        let written: Vec<_> = copies.iter().filter(|r| !r.idempotent_replay).collect();
        assert_eq!(written.len(), 1, "round {round}: {copies:?}");
        for r in &copies {
            assert_eq!(r.first_position, written[0].first_position);
        }
    }
    let ids = ids_of(&stores[0], &s).await;
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "no id twice: {ids:?}");
    let copies: usize = (0..5).map(|round| 1 + round % 3).sum();
    assert_eq!(
        ids.len(),
        copies + 2 * 5,
        "each batch once and every other append"
    );
}

/// A schema as version 1 wrote it (no batch columns, no index on ids) is migrated by `connect`:
/// its events stay, their ids count as seen (an old batch that is not its stream's last is
/// refused rather than written twice; the last one still replays), and new appends are
/// recognized as retries after later appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_is_migrated_and_its_ids_stay_seen() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let s = stream("old-1");
    let (old, last) = (events(2), events(1));
    let store = db.store(options()).await;
    store
        .append(&s, ExpectedRevision::NoStream, old.clone())
        .await
        .expect("append");
    let last_r = store
        .append(&s, ExpectedRevision::Exact(1), last.clone())
        .await
        .expect("append");
    drop(store);
    // Back to what version 1 had: its rows carry no batch.
    let client = db.client().await.expect("connect");
    client
        .batch_execute(
            "ALTER TABLE eventfold.events DROP COLUMN batch_index, DROP COLUMN batch_len;
             DROP INDEX eventfold.events_id_idx;
             DELETE FROM eventfold.schema_version;
             INSERT INTO eventfold.schema_version VALUES (1);",
        )
        .await
        .expect("make the schema a version 1 one");

    let store = db.store(options()).await;
    let version: i32 = client
        .query_one("SELECT max(version) FROM eventfold.schema_version", &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, 3);
    let index: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'eventfold' AND indexname = 'events_id_idx'",
            &[],
        )
        .await
        .expect("indexes")
        .get(0);
    assert_eq!(index, 1, "the index on ids is made");
    assert_eq!(ids_of(&store, &s).await.len(), 3, "the events stay");

    let again = store
        .append(&s, ExpectedRevision::Any, last)
        .await
        .expect("the last batch replays");
    assert!(again.idempotent_replay && again.first_position == last_r.first_position);
    let r = store.append(&s, ExpectedRevision::Any, old.clone()).await;
    assert!(
        matches!(&r, Err(StoreError::DuplicateEventId { id, .. }) if *id == old[0].id),
        "an old batch's ids are seen, its batch is not known: {r:?}"
    );
    let new = events(2);
    let first = store
        .append(&s, ExpectedRevision::Exact(2), new.clone())
        .await
        .expect("append");
    store
        .append(&s, ExpectedRevision::Exact(4), events(1))
        .await
        .expect("append");
    let again = store
        .append(&s, ExpectedRevision::Any, new)
        .await
        .expect("a retry after a later append");
    assert!(again.idempotent_replay && again.first_position == first.first_position);
    assert_eq!(ids_of(&store, &s).await.len(), 6);
}
