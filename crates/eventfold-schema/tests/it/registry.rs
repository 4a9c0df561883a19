//! The registry's own rules: its stream is its own, every server on a store sees every
//! registration, a restart finds them, an import carries them, and it composes with
//! crypto-shredding.

use std::sync::Arc;

use eventfold_core::{
    AppendCondition, COMPILED_SCHEMAS_MAX, DeleteMode, EventSchema, EventStore, EventType,
    ExpectedRevision, ImportBatch, Limits, NewEvent, Query, ReadStream, Revision, SchemaDocument,
    SchemaKey, SchemaRegistered, StoreError, StreamMetadata, StreamName,
};
use eventfold_memory::MemoryStore;
use eventfold_schema::{REGISTERED_EVENT_TYPE, SCHEMA_STREAM, Validating};
use serde_json::json;

fn ty(t: &str) -> EventType {
    EventType::new(t).unwrap()
}

fn schema(t: &str, v: u32, doc: serde_json::Value) -> EventSchema {
    EventSchema {
        key: SchemaKey::new(ty(t), v),
        document: SchemaDocument::new(doc).unwrap(),
    }
}

fn price_schema(t: &str) -> EventSchema {
    schema(
        t,
        1,
        json!({"type": "object", "required": ["price"], "properties": {"price": {"type": "number"}}}),
    )
}

fn priced(t: &str, price: serde_json::Value) -> NewEvent {
    NewEvent::json(ty(t), &json!({ "price": price }))
}

fn stream(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(r: Result<T, StoreError>, index: usize) {
    match r {
        Err(StoreError::SchemaValidationFailed { index: i, .. }) => assert_eq!(i, index),
        other => panic!("expected SchemaValidationFailed at {index}, got {other:?}"),
    }
}

#[tokio::test]
async fn the_schema_stream_is_written_by_the_registry_only() {
    let store = Validating::exclusive(MemoryStore::new());
    store.register_schema(price_schema("p")).await.unwrap();
    let s = stream(SCHEMA_STREAM);
    let read = store
        .read_stream(&s, ReadStream::forward(10))
        .await
        .unwrap();
    assert_eq!(read.events.len(), 1, "readable like any stream");
    assert_eq!(read.events[0].event_type.as_str(), REGISTERED_EVENT_TYPE);
    let forged = NewEvent::json(
        ty(REGISTERED_EVENT_TYPE),
        &json!({"event_type": "p", "schema_version": 2, "schema": {}}),
    );
    for r in [
        store
            .append(&s, ExpectedRevision::Any, vec![forged])
            .await
            .map(drop),
        store
            .set_metadata(
                &s,
                StreamMetadata {
                    max_count: Some(0),
                    ..StreamMetadata::default()
                },
            )
            .await,
        store
            .delete_stream(&s, ExpectedRevision::Any, DeleteMode::Hard)
            .await,
    ] {
        match r {
            Err(StoreError::Invalid(v)) => {
                assert_eq!(v.what, "stream name");
                assert!(v.reason.contains("PUT /schemas"), "{v}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(
        store.list_schemas().await.unwrap(),
        vec![SchemaKey::new(ty("p"), 1)]
    );
}

/// Two servers on one store (two registries over one memory store, as two `eventfold serve`
/// on one PostgreSQL database): a registration through one is enforced by the other on its
/// very next append, and two registrations of one key agree on one document.
#[tokio::test]
async fn every_server_on_a_store_sees_every_registration() {
    let shared = MemoryStore::new();
    let a = Validating::new(shared.clone());
    let b = Validating::new(shared.clone());
    let s = stream("order-1");
    // B has read the (empty) registry before A registers.
    b.append(&s, ExpectedRevision::Any, vec![priced("p", json!("x"))])
        .await
        .unwrap();
    assert_eq!(b.list_schemas().await.unwrap(), vec![]);
    a.register_schema(price_schema("p")).await.unwrap();
    assert_refused(
        b.append(&s, ExpectedRevision::Any, vec![priced("p", json!("x"))])
            .await,
        0,
    );
    assert_eq!(
        b.schema(&SchemaKey::new(ty("p"), 1)).await.unwrap(),
        price_schema("p")
    );
    // Both register v2 of another type at once, with different documents: one wins, the
    // other is told so, and both then enforce the winner.
    let one = schema("q", 2, json!({"type": "object", "required": ["one"]}));
    let two = schema("q", 2, json!({"type": "object", "required": ["two"]}));
    let (ra, rb) = tokio::join!(
        a.register_schema(one.clone()),
        b.register_schema(two.clone())
    );
    let winner = match (ra, rb) {
        (Ok(SchemaRegistered::Created), Err(StoreError::SchemaConflict { .. })) => one,
        (Err(StoreError::SchemaConflict { .. }), Ok(SchemaRegistered::Created)) => two,
        other => panic!("expected one registration and one conflict, got {other:?}"),
    };
    for store in [&a, &b] {
        assert_eq!(
            store.schema(&SchemaKey::new(ty("q"), 2)).await.unwrap(),
            winner
        );
    }
    let events = shared
        .read_stream(&stream(SCHEMA_STREAM), ReadStream::forward(10))
        .await
        .unwrap()
        .events;
    assert_eq!(events.len(), 2, "one registration per key");
}

/// A registry opened again over a store (a restarted server) finds the registrations.
#[tokio::test]
async fn a_new_registry_loads_the_registrations() {
    let mem = MemoryStore::new();
    let first = Validating::exclusive(mem.clone());
    for t in ["a", "b", "c"] {
        first.register_schema(price_schema(t)).await.unwrap();
    }
    drop(first);
    let again = Validating::exclusive(mem.clone());
    assert_refused(
        again
            .append(
                &stream("x-1"),
                ExpectedRevision::Any,
                vec![priced("a", json!(1)), priced("c", json!(null))],
            )
            .await,
        1,
    );
    assert_eq!(again.list_schemas().await.unwrap().len(), 3);
}

/// An import of the schema stream (moving a store) registers its schemas on the target; an
/// import there of anything but registrations, or of a conflicting one, is refused.
#[tokio::test]
async fn an_import_carries_the_registrations() {
    let source = Validating::exclusive(MemoryStore::new());
    source.register_schema(price_schema("p")).await.unwrap();
    source
        .register_schema(schema("q", 1, json!(true)))
        .await
        .unwrap();
    let s = stream(SCHEMA_STREAM);
    let exported = source
        .read_stream(&s, ReadStream::forward(10))
        .await
        .unwrap()
        .events;
    let to_import = |events: &[eventfold_core::RecordedEvent]| ImportBatch {
        first_revision: events[0].revision,
        events: events
            .iter()
            .map(|e| {
                let mut n =
                    NewEvent::bytes(e.event_type.clone(), e.content_type.clone(), e.data.clone())
                        .with_id(e.id)
                        .with_schema_version(e.schema_version);
                n.metadata = e.metadata.clone();
                (n, e.timestamp)
            })
            .collect(),
    };
    let target = Validating::exclusive(MemoryStore::new());
    // Something else imported into the schema stream is refused.
    let forged = ImportBatch {
        first_revision: Revision(0),
        events: vec![(priced("p", json!(1)), exported[0].timestamp)],
    };
    match target
        .append_imported(&s, ExpectedRevision::NoStream, forged)
        .await
    {
        Err(StoreError::Invalid(v)) => assert_eq!(v.what, "JSON Schema"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    target
        .append_imported(&s, ExpectedRevision::NoStream, to_import(&exported))
        .await
        .unwrap();
    assert_eq!(
        target.list_schemas().await.unwrap(),
        source.list_schemas().await.unwrap()
    );
    assert_refused(
        target
            .append(
                &stream("o-1"),
                ExpectedRevision::Any,
                vec![priced("p", json!("x"))],
            )
            .await,
        0,
    );
    // A registry holding another document for a key refuses an import of that key.
    let other = Validating::exclusive(MemoryStore::new());
    other
        .register_schema(schema("p", 1, json!({"type": "string"})))
        .await
        .unwrap();
    let mut batch = to_import(&exported[..1]);
    batch.first_revision = Revision(1);
    match other
        .append_imported(&s, ExpectedRevision::Exact(0), batch)
        .await
    {
        Err(StoreError::SchemaConflict { key }) => assert_eq!(key, SchemaKey::new(ty("p"), 1)),
        r => panic!("expected SchemaConflict, got {r:?}"),
    }
}

/// More schemas in use than the compiled cache holds: each is compiled again from its
/// registration when needed, and validates the same.
#[tokio::test]
async fn schemas_beyond_the_compiled_cache_still_validate() {
    let store = Validating::exclusive(MemoryStore::new());
    let n = COMPILED_SCHEMAS_MAX + 5;
    for i in 0..n {
        store
            .register_schema(price_schema(&format!("t{i}")))
            .await
            .unwrap();
    }
    let s = stream("many-1");
    for i in [0, 1, n / 2, n - 1] {
        let t = format!("t{i}");
        store
            .append(&s, ExpectedRevision::Any, vec![priced(&t, json!(i))])
            .await
            .unwrap();
        assert_refused(
            store
                .append(&s, ExpectedRevision::Any, vec![priced(&t, json!("no"))])
                .await,
            0,
        );
    }
}

/// Under crypto-shredding (as `eventfold serve` stacks them) the data a schema checks is the
/// plaintext, before it is sealed.
#[tokio::test]
async fn the_plaintext_is_validated_under_shredding() {
    let dir = tempfile::tempdir().unwrap();
    let keys = eventfold_shred::FileKeys::open(dir.path()).unwrap();
    let store = Validating::exclusive(eventfold_shred::Shredding::new(
        MemoryStore::with_limits(eventfold_shred::sealed_limits(Limits::DEFAULT)),
        Arc::new(keys),
        Limits::DEFAULT,
    ));
    store.register_schema(price_schema("p")).await.unwrap();
    let subject = |e: NewEvent| {
        let mut md = eventfold_core::Metadata::new();
        md.insert("$subject".into(), json!("user-1"));
        e.with_metadata(md)
    };
    let s = stream("user-1");
    store
        .append(
            &s,
            ExpectedRevision::Any,
            vec![subject(priced("p", json!(5)))],
        )
        .await
        .unwrap();
    assert_refused(
        store
            .append(
                &s,
                ExpectedRevision::Any,
                vec![subject(priced("p", json!("five")))],
            )
            .await,
        0,
    );
    let read = store
        .read_stream(&s, ReadStream::forward(10))
        .await
        .unwrap();
    assert_eq!(read.events.len(), 1);
    assert_eq!(read.events[0].data_json(), Some(json!({"price": 5})));
}

/// A store that reads fewer events at once than the registry's page (a server started with a
/// low `--read-limit-max`): the registry reads in the store's pages, and appends still work.
#[tokio::test]
async fn a_low_read_limit_is_respected() {
    let limits = Limits {
        read_limit_max: 2,
        ..Limits::DEFAULT
    };
    let mem = MemoryStore::with_limits(limits);
    let first = Validating::exclusive(mem.clone());
    for t in ["a", "b", "c", "d", "e"] {
        first.register_schema(price_schema(t)).await.unwrap();
    }
    for store in [
        Validating::exclusive(mem.clone()),
        Validating::new(mem.clone()),
    ] {
        store
            .append(
                &stream("x-1"),
                ExpectedRevision::Any,
                vec![priced("e", json!(1))],
            )
            .await
            .unwrap();
        assert_refused(
            store
                .append(
                    &stream("x-1"),
                    ExpectedRevision::Any,
                    vec![priced("e", json!("no"))],
                )
                .await,
            0,
        );
        assert_eq!(store.list_schemas().await.unwrap().len(), 5);
    }
}

/// A batch appended before its type had a schema, retried after one is registered (its first
/// answer lost), is told it landed, by every append path; a new batch is still checked.
#[tokio::test]
async fn a_retry_of_a_batch_appended_before_its_schema_is_answered_as_a_replay() {
    let store = Validating::exclusive(MemoryStore::new());
    let s = stream("order-1");
    let batch = vec![priced("p", json!("free")), priced("p", json!(3))];
    let first = store
        .append(&s, ExpectedRevision::NoStream, batch.clone())
        .await
        .unwrap();
    assert!(!first.idempotent_replay);
    store.register_schema(price_schema("p")).await.unwrap();
    let same = |r: &eventfold_core::AppendResult| {
        assert!(r.idempotent_replay, "answered as a retry: {r:?}");
        assert_eq!(
            (
                r.first_revision,
                r.last_revision,
                r.first_position,
                r.last_position
            ),
            (
                first.first_revision,
                first.last_revision,
                first.first_position,
                first.last_position
            )
        );
    };
    same(
        &store
            .append(&s, ExpectedRevision::NoStream, batch.clone())
            .await
            .unwrap(),
    );
    same(
        &store
            .append_sequenced(&s, ExpectedRevision::NoStream, batch.clone(), None)
            .await
            .await
            .unwrap(),
    );
    let condition = AppendCondition::new(Query::all(), None);
    same(
        &store
            .append_with_condition(&s, ExpectedRevision::NoStream, batch.clone(), condition)
            .await
            .unwrap(),
    );
    // Not a retry: refused by the schema, whatever it expects, and nothing is written.
    for expected in [ExpectedRevision::Any, ExpectedRevision::Exact(1)] {
        assert_refused(
            store
                .append(&s, expected, vec![priced("p", json!("free"))])
                .await,
            0,
        );
    }
    // Part of the first batch is not a retry either.
    assert_refused(
        store
            .append(&s, ExpectedRevision::Any, vec![batch[0].clone()])
            .await,
        0,
    );
    let read = store
        .read_stream(&s, ReadStream::forward(10))
        .await
        .unwrap();
    assert_eq!(
        read.events.len(),
        2,
        "only the first batch is in the stream"
    );
}
