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

/// A schema of version 1 (before tags) is upgraded by `connect`: its events read back with no
/// tags, new ones keep theirs, and reads by query and conditional appends work on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_is_upgraded_to_tags() {
    use eventfold_core::{AppendCondition, Position, Query, QueryItem, ReadAll, Tag, Tags};
    let Some(db) = TestDb::create().await else {
        return;
    };
    let client = db.client().await.expect("connect");
    // Version 1's tables, as its `connect` created them, with one event.
    client
        .batch_execute(
            "CREATE SCHEMA eventfold;
             CREATE TABLE eventfold.schema_version (version integer NOT NULL);
             CREATE TABLE eventfold.log_head (id boolean PRIMARY KEY DEFAULT true CHECK (id),
                 next_position bigint NOT NULL, last_timestamp_us bigint NOT NULL);
             INSERT INTO eventfold.log_head VALUES (true, 1, 1);
             CREATE TABLE eventfold.streams (name text COLLATE \"C\" PRIMARY KEY,
                 next_revision bigint NOT NULL DEFAULT 0, deleted_before bigint NOT NULL DEFAULT 0,
                 tombstoned boolean NOT NULL DEFAULT false, metadata text NOT NULL DEFAULT '{}',
                 last_first_revision bigint, last_len bigint, last_first_position bigint,
                 last_last_position bigint);
             INSERT INTO eventfold.streams VALUES ('order-1', 1, 0, false, '{}', 0, 1, 0, 0);
             CREATE TABLE eventfold.events (position bigint PRIMARY KEY,
                 stream text COLLATE \"C\" NOT NULL, revision bigint NOT NULL, id bytea NOT NULL,
                 event_type text NOT NULL, timestamp_us bigint NOT NULL,
                 schema_version bigint NOT NULL, content_type text NOT NULL, data bytea NOT NULL,
                 metadata text NOT NULL, UNIQUE (stream, revision));
             INSERT INTO eventfold.events VALUES (0, 'order-1', 0,
                 '\\x0192f6a0000070008000000000000001', 'placed', 1, 1, 'application/json',
                 '{\"n\":1}', '{}');
             INSERT INTO eventfold.schema_version VALUES (1);",
        )
        .await
        .expect("a version 1 schema");
    let store = db.store(in_schema("eventfold")).await;
    let version: i32 = client
        .query_one("SELECT max(version) FROM eventfold.schema_version", &[])
        .await
        .expect("read the version")
        .get(0);
    assert_eq!(version, 3);
    let old = store
        .read_stream(&stream(), ReadStream::forward(10))
        .await
        .expect("the version 1 event");
    assert_eq!(old.events.len(), 1);
    assert!(old.events[0].tags.is_empty());
    let tagged = event().with_tags(Tags::parse(["order:1"]).expect("a valid tag"));
    let q = Query::from(
        QueryItem::tagged([Tag::new("order:1").expect("a valid tag")]).expect("an item"),
    );
    let r = store
        .append_with_condition(
            &stream(),
            ExpectedRevision::Any,
            vec![tagged],
            AppendCondition::new(q.clone(), None),
        )
        .await
        .expect("nothing carried order:1 yet");
    let read = store
        .read_all(ReadAll::forward(10).filter(EventFilter::default().with_query(q.clone())))
        .await
        .expect("read by query");
    assert_eq!(read.events.len(), 1);
    assert_eq!(read.events[0].position, r.first_position);
    let again = store
        .append_with_condition(
            &stream(),
            ExpectedRevision::Any,
            vec![event()],
            AppendCondition::new(q, Some(Position(0))),
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::AppendConditionFailed { position, .. }) if position == r.first_position),
        "{again:?}"
    );
    // A second connect finds version 3 and changes nothing.
    drop(store);
    let store = db.store(in_schema("eventfold")).await;
    assert_eq!(
        store
            .read_all(ReadAll::forward(10))
            .await
            .expect("read")
            .events
            .len(),
        2
    );
}
