use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eventfold::core::{EventStore, Position};
use eventfold::testing::append_events;
use eventfold::{
    BoxError, DomainEvent, Envelope, Projection, ProjectionError, ProjectionProcessor, ReadModel,
};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_sqlite::rusqlite::{Transaction, params};
use eventfold_sqlite::{Sqlite, SqliteError, SqliteProjection, SqliteReadModel};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Added {
    pub n: i64,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "counter.")]
pub enum CounterEvent {
    Added(Added),
}

/// One row per event (its id is the key, so applying one twice fails) and a running total.
/// While `poison` is set it fails on `n == POISON`, after writing the rows before it.
pub struct Totals {
    pub poison: Arc<AtomicBool>,
}

const POISON: i64 = 12;

impl Projection for Totals {
    type Event = CounterEvent;
    fn name(&self) -> &str {
        "totals"
    }
}

impl SqliteProjection for Totals {
    fn migrate(&self, tx: &Transaction<'_>) -> Result<(), BoxError> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS applied (event_id BLOB PRIMARY KEY, n INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 1),
                 count INTEGER NOT NULL, sum INTEGER NOT NULL);
             INSERT OR IGNORE INTO totals VALUES (1, 0, 0);",
        )?;
        Ok(())
    }

    fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope<CounterEvent>],
    ) -> Result<(), BoxError> {
        let mut insert = tx.prepare_cached("INSERT INTO applied (event_id, n) VALUES (?1, ?2)")?;
        let mut total = tx.prepare_cached("UPDATE totals SET count = count + 1, sum = sum + ?1")?;
        for e in events {
            let CounterEvent::Added(Added { n }) = e.event;
            if n == POISON && self.poison.load(Ordering::SeqCst) {
                return Err(format!("refusing n = {n}").into());
            }
            insert.execute(params![e.id.as_bytes().as_slice(), n])?;
            total.execute([n])?;
        }
        Ok(())
    }

    fn reset(&self, tx: &Transaction<'_>) -> Result<(), BoxError> {
        tx.execute_batch("DELETE FROM applied; UPDATE totals SET count = 0, sum = 0;")?;
        Ok(())
    }
}

struct Setup {
    store: Arc<dyn EventStore>,
    model: SqliteReadModel<Totals>,
    poison: Arc<AtomicBool>,
}

async fn open(dir: &Path) -> Setup {
    let store: Arc<dyn EventStore> =
        Arc::new(Engine::open(dir.join("events"), EngineOptions::for_tests()).unwrap());
    let db = Sqlite::open(dir.join("read.db")).await.unwrap();
    let poison = Arc::new(AtomicBool::new(false));
    let model = SqliteReadModel::new(
        db,
        Totals {
            poison: poison.clone(),
        },
    )
    .await
    .unwrap();
    Setup {
        store,
        model,
        poison,
    }
}

async fn add(store: &dyn EventStore, stream: &str, ns: impl IntoIterator<Item = i64>) -> Position {
    let events = ns.into_iter().map(|n| CounterEvent::Added(Added { n }));
    append_events(store, &format!("counter-{stream}"), events)
        .await
        .unwrap()
}

/// (rows in `applied`, count, sum) of the read model.
pub async fn totals(model: &SqliteReadModel<Totals>) -> (i64, i64, i64) {
    model
        .db()
        .call(|c| -> Result<_, SqliteError> {
            let rows = c.query_row("SELECT count(*) FROM applied", [], |r| r.get(0))?;
            let (count, sum) = c.query_row("SELECT count, sum FROM totals", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            Ok((rows, count, sum))
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn catches_up_follows_live_and_continues_after_both_are_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let s = open(dir.path()).await;
        add(&*s.store, "a", 1..=200).await;
        let last = add(&*s.store, "b", 201..=300).await;
        let handle = ProjectionProcessor::new(s.store.clone(), s.model.clone())
            .batch_size(64)
            .start();
        handle.wait_until(last).await.unwrap();
        assert_eq!(totals(&s.model).await, (300, 300, (1..=300).sum()));

        let last = add(&*s.store, "a", 301..=350).await;
        handle.wait_until(last).await.unwrap();
        handle.stop().await.unwrap();
        assert_eq!(s.model.checkpoint().await.unwrap(), Some(last));
        last
    };

    // Everything closed and opened again: the processor resumes after the checkpoint.
    let s = open(dir.path()).await;
    assert_eq!(s.model.checkpoint().await.unwrap(), Some(last));
    let new_last = add(&*s.store, "c", 351..=380).await;
    let handle = ProjectionProcessor::new(s.store.clone(), s.model.clone()).start();
    handle.wait_until(new_last).await.unwrap();
    // Each event exactly once: a second apply would break the primary key and stop it.
    assert_eq!(totals(&s.model).await, (380, 380, (1..=380).sum()));
    assert_eq!(handle.lag().await.unwrap().lag_events, 0);
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn a_failure_in_the_middle_of_a_batch_rolls_back_the_read_model_and_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    // One append: positions 0..=19 hold n = 1..=20.
    let last = add(&*s.store, "p", 1..=20).await;
    s.poison.store(true, Ordering::SeqCst);
    let processor = ProjectionProcessor::new(s.store.clone(), s.model.clone()).batch_size(8);

    let err = processor.start().join().await.unwrap_err();
    let ProjectionError::Apply {
        first,
        last: batch_last,
        ..
    } = &err
    else {
        panic!("expected an apply error, got {err}");
    };
    let poison_position = (POISON - 1) as u64;
    // The failing batch began before the poisoned event: rows for those were written...
    assert!(
        *first < poison_position && poison_position <= *batch_last,
        "{err}"
    );
    // ...and rolled back with the checkpoint: the read model holds exactly the earlier batches.
    let applied = *first as i64;
    assert_eq!(
        totals(&s.model).await,
        (applied, applied, (1..=applied).sum())
    );
    assert_eq!(
        s.model.checkpoint().await.unwrap(),
        first.checked_sub(1).map(Position)
    );

    // Fixed: a restart retries the batch and applies every event once.
    s.poison.store(false, Ordering::SeqCst);
    let handle = processor.start();
    handle.wait_until(last).await.unwrap();
    assert_eq!(totals(&s.model).await, (20, 20, 210));
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn rebuild_empties_the_tables_and_replays_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    let head = add(&*s.store, "r", 1..=250).await;
    let processor = ProjectionProcessor::new(s.store.clone(), s.model.clone()).batch_size(100);
    processor.catch_up(|_| {}).await.unwrap();

    let mut seen = Vec::new();
    let report = processor
        .rebuild(|p| seen.push((p.events_done, p.position, p.head)))
        .await
        .unwrap();
    assert_eq!((report.events, report.position), (250, Some(head)));
    // Batches of at most 100, each reported, the last one at the head.
    assert!(seen.len() >= 3, "{seen:?}");
    assert_eq!(seen.last(), Some(&(250, head, head)));
    assert!(
        seen.iter()
            .all(|&(done, p, h)| h == head && p.0 + 1 == done)
    );
    assert!(seen.windows(2).all(|w| w[1].0 - w[0].0 <= 100));
    assert_eq!(totals(&s.model).await, (250, 250, (1..=250).sum()));
}
