//! The JSON Schema registry on PostgreSQL (`eventfold_schema::Validating` as `eventfold serve
//! --store` runs it: `Freshness::Shared`): the schema cases on a fresh database each, and two
//! stores on one database (two servers) enforcing each other's registrations.

use eventfold_core::{
    EventSchema, EventStore, EventType, ExpectedRevision, NewEvent, SchemaDocument, SchemaKey,
    StoreError, StreamName,
};
use eventfold_schema::Validating;
use eventfold_store_postgres::PostgresOptions;
use serde_json::json;

use crate::TestDb;

/// A registry over a fresh database, or over the in-memory store when PostgreSQL is
/// unreachable (the case then proves nothing about PostgreSQL, and the conformance module
/// says so on stderr).
async fn store() -> (Validating<crate::conformance::Store>, Option<TestDb>) {
    let (store, db) = crate::conformance::store().await;
    (Validating::new(store), db)
}

eventfold_conformance::schema_conformance_tests!(store);

/// Two servers on one database: a schema registered through one is enforced by the other on
/// its next append, though the other had read the (empty) registry before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_on_one_server_is_enforced_by_another() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let a = Validating::new(db.store(PostgresOptions::default()).await);
    let b = Validating::new(db.store(PostgresOptions::default()).await);
    let s = StreamName::new("order-1").unwrap();
    let t = EventType::new("order.placed").unwrap();
    let bad = || NewEvent::json(t.clone(), &json!({"total": "lots"}));
    b.append(&s, ExpectedRevision::Any, vec![bad()])
        .await
        .expect("no schema yet");
    a.register_schema(EventSchema {
        key: SchemaKey::new(t.clone(), 1),
        document: SchemaDocument::new(
            json!({"type": "object", "properties": {"total": {"type": "number"}}}),
        )
        .unwrap(),
    })
    .await
    .expect("register through a");
    match b.append(&s, ExpectedRevision::Any, vec![bad()]).await {
        Err(StoreError::SchemaValidationFailed {
            index: 0,
            instance_path,
            ..
        }) => assert_eq!(instance_path, "/total"),
        other => panic!("b must enforce a's schema, got {other:?}"),
    }
    b.append(
        &s,
        ExpectedRevision::Any,
        vec![NewEvent::json(t, &json!({"total": 3}))],
    )
    .await
    .expect("a matching event");
}
