//! What an append answers when PostgreSQL drops its connection: before the commit, nothing
//! was written (`Unavailable`, outcome known); during the commit, the outcome is unknown and
//! an append retried with the same event ids is safe.

use std::time::Duration;

use eventfold_core::{
    EventStore, EventType, ExpectedRevision, NewEvent, ReadStream, StoreError, StreamName,
};
use eventfold_store_postgres::PostgresOptions;

use crate::TestDb;

fn stream() -> StreamName {
    StreamName::new("order-1").expect("a valid stream name")
}

fn event(event_type: &str) -> NewEvent {
    NewEvent::json(
        EventType::new(event_type).expect("a valid event type"),
        &serde_json::json!({ "n": 1 }),
    )
}

/// A connection to the test database.
async fn connect(db: &TestDb) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 user=postgres dbname={}", db.name()),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

/// Waits until a backend of the store on `db` matches `wait` (a condition on
/// `pg_stat_activity`), then terminates it.
async fn terminate_when(admin: &tokio_postgres::Client, db: &TestDb, wait: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let killed: i64 = admin
            .query_one(
                &format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid() AND {wait}"
                ),
                &[&db.name()],
            )
            .await
            .expect("terminate the waiting backend")
            .get(0);
        if killed > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no backend came to wait on {wait}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_before_the_commit_wrote_nothing() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.store(PostgresOptions::default()).await;
    // Hold the end of the log's row: the append's transaction waits for it, before its commit.
    let holder = connect(&db).await;
    holder
        .batch_execute("BEGIN; SELECT * FROM eventfold.log_head FOR UPDATE")
        .await
        .expect("lock the end of the log");
    let events = vec![event("placed")];
    let append = tokio::spawn({
        let store = store.clone();
        let events = events.clone();
        async move { store.append(&stream(), ExpectedRevision::Any, events).await }
    });
    let admin = connect(&db).await;
    terminate_when(&admin, &db, "wait_event_type = 'Lock'").await;
    let e = append
        .await
        .expect("the append task")
        .expect_err("its connection was terminated");
    match &e {
        StoreError::Unavailable {
            outcome_unknown: false,
            ..
        } => {}
        other => panic!("expected Unavailable with a known outcome, got {other:?}"),
    }
    assert!(e.to_string().contains("nothing was written"), "{e}");
    holder.batch_execute("ROLLBACK").await.expect("unlock");
    let again = store
        .append(&stream(), ExpectedRevision::Any, events)
        .await
        .expect("the retry");
    assert!(!again.idempotent_replay, "the first attempt wrote nothing");
    let slice = store
        .read_stream(&stream(), ReadStream::forward(100))
        .await
        .expect("read");
    assert_eq!(slice.events.len(), 1);
}

/// Makes every commit that inserted an event of type `slow` wait inside `COMMIT` (a deferred
/// trigger runs there) until its backend is terminated.
async fn slow_commits(admin: &tokio_postgres::Client) {
    admin
        .batch_execute(
            "CREATE FUNCTION public.slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.event_type = 'slow' THEN PERFORM pg_sleep(30); END IF; RETURN NULL; END $$; \
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON eventfold.events \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.slow_commit()",
        )
        .await
        .expect("create the slow trigger");
}

/// Appends `events` with `NoStream` in a task of its own.
fn spawn_append(
    store: &eventfold_store_postgres::PostgresStore,
    events: &[NewEvent],
) -> tokio::task::JoinHandle<eventfold_core::StoreResult<eventfold_core::AppendResult>> {
    let store = store.clone();
    let events = events.to_vec();
    tokio::spawn(async move {
        store
            .append(&stream(), ExpectedRevision::NoStream, events)
            .await
    })
}

/// After the retry of `events` (same ids, same expected revision), the batch is stored once,
/// and a further retry is answered as a replay.
async fn retried_once(store: &eventfold_store_postgres::PostgresStore, events: Vec<NewEvent>) {
    let again = store
        .append(&stream(), ExpectedRevision::NoStream, events.clone())
        .await
        .expect("the retry");
    assert!(
        !again.idempotent_replay,
        "the first attempt was rolled back"
    );
    let replay = store
        .append(&stream(), ExpectedRevision::NoStream, events.clone())
        .await
        .expect("a second retry");
    assert!(replay.idempotent_replay);
    let slice = store
        .read_stream(&stream(), ReadStream::forward(100))
        .await
        .expect("read");
    let ids: Vec<_> = slice.events.iter().map(|e| e.id).collect();
    let want: Vec<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, want, "the batch is stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_during_the_commit_is_checked_on_another_one() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.store(PostgresOptions::default()).await;
    let admin = connect(&db).await;
    slow_commits(&admin).await;
    let events = vec![event("slow"), event("placed")];
    let append = spawn_append(&store, &events);
    terminate_when(&admin, &db, "wait_event = 'PgSleep'").await;
    let e = append
        .await
        .expect("the append task")
        .expect_err("its connection was terminated during the commit");
    // The store asked the database on another connection: the commit did not happen.
    match &e {
        StoreError::Unavailable {
            outcome_unknown: false,
            ..
        } => {}
        other => panic!("expected Unavailable with a known outcome, got {other:?}"),
    }
    assert!(e.to_string().contains("rolled back"), "{e}");
    admin
        .batch_execute("DROP TRIGGER slow_commit ON eventfold.events")
        .await
        .expect("drop the slow trigger");
    retried_once(&store, events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_with_the_database_is_an_unknown_outcome_and_a_retry_is_safe() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.store(PostgresOptions::default()).await;
    let admin = connect(&db).await;
    slow_commits(&admin).await;
    let events = vec![event("slow"), event("placed")];
    let append = spawn_append(&store, &events);
    // Once the commit waits: no new connection to the database, every other one of the store
    // closed, then the committing one.
    let root = eventfold_store_postgres::testing::admin()
        .await
        .expect("connect to the postgres database");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = root
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event = 'PgSleep'",
                &[&db.name()],
            )
            .await
            .expect("look for the waiting commit")
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no commit came to wait"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    root.batch_execute(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS false",
        db.name()
    ))
    .await
    .expect("refuse new connections");
    terminate_when(
        &root,
        &db,
        "wait_event IS DISTINCT FROM 'PgSleep' AND backend_type = 'client backend'",
    )
    .await;
    terminate_when(&root, &db, "wait_event = 'PgSleep'").await;
    let e = append
        .await
        .expect("the append task")
        .expect_err("its connection was terminated during the commit");
    match &e {
        StoreError::Unavailable {
            outcome_unknown: true,
            ..
        } => {}
        other => panic!("expected Unavailable with an unknown outcome, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("may or may not") && msg.contains("same event ids"),
        "{msg}"
    );
    root.batch_execute(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        db.name()
    ))
    .await
    .expect("take connections again");
    connect(&db)
        .await
        .batch_execute("DROP TRIGGER slow_commit ON eventfold.events")
        .await
        .expect("drop the slow trigger");
    retried_once(&store, events).await;
}
