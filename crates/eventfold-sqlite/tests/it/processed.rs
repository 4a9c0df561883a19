use std::time::Duration;

use eventfold::core::{EventId, Position};
use eventfold::testing::check_checkpoint_store;
use eventfold::{CheckpointStore, ProcessedIds};
use eventfold_sqlite::{Sqlite, SqliteCheckpoints, SqliteProcessedIds};

#[tokio::test]
async fn processed_ids_are_seen_until_they_expire_and_then_purged() {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(dir.path().join("ids.db")).await.unwrap();
    let ids = SqliteProcessedIds::new(db.clone()).await.unwrap();
    let (a, b) = (EventId::new_v7(), EventId::new_v7());

    assert!(!ids.seen("email", a).await.unwrap());
    ids.mark("email", a, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(ids.seen("email", a).await.unwrap());
    // Per consumer: another consumer has not handled it.
    assert!(!ids.seen("billing", a).await.unwrap());

    // A time-to-live of zero is expired at once: not seen, and purged.
    ids.mark("email", b, Duration::ZERO).await.unwrap();
    assert!(!ids.seen("email", b).await.unwrap());
    assert_eq!(ids.purge_expired().await.unwrap(), 1);
    assert_eq!(ids.purge_expired().await.unwrap(), 0);
    assert!(ids.seen("email", a).await.unwrap());

    // Durable: a new connection to the file still knows `a`.
    drop(ids);
    drop(db);
    let db = Sqlite::open(dir.path().join("ids.db")).await.unwrap();
    let ids = SqliteProcessedIds::new(db).await.unwrap();
    assert!(ids.seen("email", a).await.unwrap());
}

#[tokio::test]
async fn checkpoints_are_saved_loaded_and_reset() {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(dir.path().join("cp.db")).await.unwrap();
    let checkpoints = SqliteCheckpoints::new(db).await.unwrap();
    check_checkpoint_store(&checkpoints).await;
    // Beyond the contract: SQLite's INTEGER is signed.
    let err = checkpoints
        .save("relay", Position(u64::MAX))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("beyond"), "{err}");
}
