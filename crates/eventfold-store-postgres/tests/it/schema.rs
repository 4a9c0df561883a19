//! The schema is eventfold's: created by `connect`, kept across connects, refused when newer,
//! one per `PostgresOptions::schema`; and a store wakes the subscribers of another store on the
//! same schema through `NOTIFY`.

use std::time::Duration;

use eventfold_core::{
    EventFilter, EventStore, EventType, ExpectedRevision, NewEvent, ReadStream, StoreError,
    StreamName, SubscribeFrom,
};
use eventfold_store_postgres::{PostgresOptions, PostgresStore};
use futures::StreamExt as _;

use crate::TestDb;

fn stream() -> StreamName {
    StreamName::new("order-1").expect("a valid stream name")
}

fn event() -> NewEvent {
    NewEvent::json(
        EventType::new("placed").expect("a valid event type"),
        &serde_json::json!({ "n": 1 }),
    )
}

fn in_schema(schema: &str) -> PostgresOptions {
    PostgresOptions {
        schema: schema.to_owned(),
        pool_size: 2,
        ..PostgresOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_creates_keeps_and_separates_schemas() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let a = db.store(in_schema("tenant_a")).await;
    a.append(&stream(), ExpectedRevision::NoStream, vec![event()])
        .await
        .expect("append");
    drop(a);
    let again = db.store(in_schema("tenant_a")).await;
    let slice = again
        .read_stream(&stream(), ReadStream::forward(10))
        .await
        .expect("the event survives a second connect");
    assert_eq!(slice.events.len(), 1);
    let b = db.store(in_schema("tenant_b")).await;
    let r = b
        .append(&stream(), ExpectedRevision::NoStream, vec![event()])
        .await
        .expect("another schema is another store");
    assert_eq!(r.first_position.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_eventfold_is_refused() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.store(in_schema("eventfold")).await;
    drop(store);
    let client = db.client().await.expect("connect");
    client
        .batch_execute("UPDATE eventfold.schema_version SET version = 99")
        .await
        .expect("pretend a newer eventfold wrote the schema");
    match PostgresStore::connect(&db.url(), in_schema("eventfold")).await {
        Err(e @ StoreError::FormatTooNew { found: 99, .. }) => {
            assert!(e.to_string().contains("upgrade eventfold"), "{e}");
        }
        other => panic!("expected FormatTooNew, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schema_names_and_unreachable_servers_are_refused() {
    let e = PostgresStore::connect(
        "postgres://postgres@127.0.0.1:5432/postgres",
        in_schema("Robert'); DROP TABLE x;--"),
    )
    .await
    .expect_err("a schema name that needs quoting");
    assert_eq!(e.code(), "invalid_request", "{e}");
    let e = PostgresStore::connect(
        "postgres://postgres@127.0.0.1:1/nowhere?connect_timeout=2",
        in_schema("eventfold"),
    )
    .await
    .expect_err("nothing listens on port 1");
    assert_eq!(e.code(), "store_unavailable", "{e}");
    assert!(e.to_string().contains("127.0.0.1:1/nowhere"), "{e}");
    // A database that does not exist will not appear by waiting: refused, not unavailable.
    let e = PostgresStore::connect(
        "postgres://postgres@127.0.0.1:5432/eventfold_no_such_database?connect_timeout=2",
        in_schema("eventfold"),
    )
    .await
    .expect_err("no such database");
    if e.code() != "store_unavailable" {
        assert_eq!(e.code(), "postgres_refused", "{e}");
        assert!(e.to_string().contains("eventfold_no_such_database"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_another_store_wakes_subscribers_by_notify() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    // Polling so slow that only the notification can deliver within the test's bound.
    let options = PostgresOptions {
        poll_interval: Duration::from_secs(600),
        ..in_schema("eventfold")
    };
    let reader = db.store(options.clone()).await;
    let writer = db.store(options).await;
    let mut sub = reader.subscribe_all(SubscribeFrom::Start, EventFilter::default());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .is_err(),
        "nothing to deliver yet"
    );
    let r = writer
        .append(&stream(), ExpectedRevision::Any, vec![event()])
        .await
        .expect("append");
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("woken by NOTIFY, not by polling")
        .expect("an event")
        .expect("not an error");
    assert_eq!(got.position, r.first_position);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_by_the_server_are_reopened() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.store(in_schema("eventfold")).await;
    let mut sub = store.subscribe_all(SubscribeFrom::Start, EventFilter::default());
    store
        .append(&stream(), ExpectedRevision::Any, vec![event()])
        .await
        .expect("append");
    let first = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the first event")
        .expect("an event")
        .expect("not an error");
    assert_eq!(first.position.0, 0);
    let admin = eventfold_store_postgres::testing::admin()
        .await
        .expect("connect");
    let killed = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
            &[&db.name()],
        )
        .await
        .expect("terminate the store's connections")
        .get::<_, i64>(0);
    assert!(killed >= 1, "the store had connections to kill");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A write may fail once on a connection the pool has not yet seen die; a retry succeeds.
    let mut appended = None;
    for _ in 0..3 {
        match store
            .append(&stream(), ExpectedRevision::Any, vec![event()])
            .await
        {
            Ok(r) => {
                appended = Some(r);
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), "store_unavailable", "{e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let r = appended.expect("an append succeeds after the connections were killed");
    let second = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the subscription goes on")
        .expect("an event")
        .expect("not an error");
    assert_eq!(second.position, r.first_position);
}
