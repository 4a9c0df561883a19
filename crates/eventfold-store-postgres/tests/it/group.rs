//! Appends queued together are decided one by one, in queue order, inside one transaction:
//! a refused one does not fail the others, and a retry queued behind its original is a replay.

use std::sync::Arc;

use eventfold_core::{EventStore, EventType, ExpectedRevision, NewEvent, ReadStream, StreamName};
use eventfold_store_postgres::PostgresOptions;

use crate::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_decides_each_append_on_its_own() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = Arc::new(db.store(PostgresOptions::default()).await);
    let s = StreamName::new("group-1").expect("a valid stream name");
    let ty = EventType::new("t").expect("a valid event type");
    let batch: Vec<NewEvent> = (0..2)
        .map(|i| NewEvent::json(ty.clone(), &serde_json::json!({ "i": i })))
        .collect();
    // The same batch (same ids) sent 8 times at once: one write, seven replays of it.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, s, batch) = (store.clone(), s.clone(), batch.clone());
        tasks.push(tokio::spawn(async move {
            store.append(&s, ExpectedRevision::Any, batch).await
        }));
    }
    // And 8 `NoStream` appends to another stream: one winner, seven conflicts.
    let t = StreamName::new("group-2").expect("a valid stream name");
    let mut racers = Vec::new();
    for i in 0..8 {
        let (store, t, ty) = (store.clone(), t.clone(), ty.clone());
        racers.push(tokio::spawn(async move {
            let e = NewEvent::json(ty, &serde_json::json!({ "racer": i }));
            store.append(&t, ExpectedRevision::NoStream, vec![e]).await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task").expect("append or replay"));
    }
    let written: Vec<_> = results.iter().filter(|r| !r.idempotent_replay).collect();
    assert_eq!(written.len(), 1, "{results:?}");
    for r in &results {
        assert_eq!(
            (r.first_revision, r.first_position, r.last_position),
            (
                written[0].first_revision,
                written[0].first_position,
                written[0].last_position
            )
        );
    }
    let mut wins = 0;
    for r in racers {
        match r.await.expect("task") {
            Ok(_) => wins += 1,
            Err(e) => assert_eq!(e.code(), "wrong_expected_revision", "{e}"),
        }
    }
    assert_eq!(wins, 1);
    let slice = store
        .read_stream(&s, ReadStream::forward(100))
        .await
        .expect("read");
    assert_eq!(slice.events.len(), 2, "the batch was written once");
}
