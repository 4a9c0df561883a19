//! JSON Schemas per event type and schema version (`EventStore::register_schema`): a store with
//! a schema registry (`eventfold_schema::Validating` around any backend, or a server through
//! the client) registers, lists and returns schemas, refuses appends that do not match, and
//! reads what it had as it was. These cases run through `schema_conformance_tests!`, only
//! against stores that have a registry: `Unsupported` fails them.

use std::sync::Arc;

use eventfold_core::{
    AppendCondition, ContentType, EventSchema, EventStore, EventType, ExpectedRevision,
    ImportBatch, Limits, NewEvent, Query, QueryItem, ReadAll, ReadStream, Revision, SchemaDocument,
    SchemaKey, SchemaRegistered, StoreError, StoreResult, Timestamp,
};
use serde_json::json;

use crate::support::{StoreExt as _, stream, ty};

fn key(t: &str, v: u32) -> SchemaKey {
    SchemaKey::new(ty(t), v)
}

fn schema(t: &str, v: u32, doc: serde_json::Value) -> EventSchema {
    EventSchema {
        key: key(t, v),
        document: SchemaDocument::new(doc).expect("the case's documents are objects"),
    }
}

/// An order: items with a numeric price.
fn order_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {
            "type": "object", "required": ["price"], "properties": {"price": {"type": "number"}}}}}
    })
}

fn order(t: &str, price: serde_json::Value) -> NewEvent {
    NewEvent::json(ty(t), &json!({"items": [{"price": price}]}))
}

/// Asserts `r` is `SchemaValidationFailed` for the event at `index` of type `t`, version `v`,
/// at `path`, and returns its reason.
#[track_caller]
fn assert_failed<T: std::fmt::Debug>(
    r: StoreResult<T>,
    index: usize,
    t: &str,
    v: u32,
    path: &str,
) -> String {
    match r {
        Err(StoreError::SchemaValidationFailed {
            index: i,
            event_type,
            schema_version,
            instance_path,
            reason,
        }) => {
            assert_eq!(
                (i, event_type, schema_version, instance_path.as_str()),
                (index, EventType::new(t).expect("valid"), v, path),
                "SchemaValidationFailed {{ index, event_type, schema_version, instance_path }}"
            );
            assert!(!reason.is_empty(), "a failure says why");
            reason
        }
        other => panic!(
            "expected SchemaValidationFailed {{ index: {index}, {t} v{v}, at {path:?} }}, got {other:?}"
        ),
    }
}

/// Registering is idempotent for the same document and refused for another one; a key without
/// a schema is not found; a document that is not a JSON Schema is refused as invalid; the list
/// is ordered by type, then version.
pub async fn schemas_register_list_and_get<S: EventStore>(store: &Arc<S>, _: Limits) {
    assert_eq!(store.list_schemas().await.expect("list"), vec![]);
    let v1 = schema("order.placed", 1, order_schema());
    assert_eq!(
        store.register_schema(v1.clone()).await.expect("register"),
        SchemaRegistered::Created
    );
    // The same document, written another way: the same schema.
    let same = schema(
        "order.placed",
        1,
        serde_json::from_str(&order_schema().to_string()).expect("json"),
    );
    assert_eq!(
        store.register_schema(same).await.expect("register again"),
        SchemaRegistered::Unchanged
    );
    let other = schema("order.placed", 1, json!({"type": "object"}));
    match store.register_schema(other).await {
        Err(StoreError::SchemaConflict { key: k }) => assert_eq!(k, key("order.placed", 1)),
        r => panic!("expected SchemaConflict for order.placed v1, got {r:?}"),
    }
    assert_eq!(
        store.schema(&key("order.placed", 1)).await.expect("get"),
        v1,
        "the registered document is returned as it was"
    );
    let bad = schema("order.placed", 3, json!({"type": 12}));
    match store.register_schema(bad).await {
        Err(StoreError::Invalid(v)) => assert_eq!(v.what, "JSON Schema", "{v}"),
        r => panic!("expected an invalid JSON Schema, got {r:?}"),
    }
    for (t, v) in [("order.placed", 2), ("a.b", 7), ("order.placed", 0)] {
        assert_eq!(
            store
                .register_schema(schema(t, v, json!({"type": "object"})))
                .await
                .expect("register"),
            SchemaRegistered::Created
        );
    }
    assert_eq!(
        store.list_schemas().await.expect("list"),
        vec![
            key("a.b", 7),
            key("order.placed", 0),
            key("order.placed", 1),
            key("order.placed", 2)
        ]
    );
    match store.schema(&key("order.placed", 3)).await {
        Err(StoreError::SchemaNotFound { key: k }) => assert_eq!(k, key("order.placed", 3)),
        r => panic!("expected SchemaNotFound for order.placed v3, got {r:?}"),
    }
}

/// An event whose type and version have a schema must match it, else the whole batch is
/// refused naming the first failing event's index and path, and nothing is written; events
/// of other types or versions, and appends before any schema, are not checked; data that is
/// not JSON fails a registered schema.
pub async fn appends_are_checked_against_registered_schemas<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    let s = stream("order-1");
    store
        .append(
            &s,
            ExpectedRevision::NoStream,
            vec![order("order.placed", json!("not checked yet"))],
        )
        .await
        .expect("no schema yet: anything goes");
    store
        .register_schema(schema("order.placed", 1, order_schema()))
        .await
        .expect("register");
    let before = store.all_events().await;
    store
        .append(
            &s,
            ExpectedRevision::Exact(0),
            vec![order("order.placed", json!(9.5))],
        )
        .await
        .expect("a matching event");
    let after_ok = store.all_events().await;
    assert_eq!(after_ok.len(), before.len() + 1);
    // The second event fails: the batch is refused, the first is not written either.
    let r = store
        .append(
            &s,
            ExpectedRevision::Exact(1),
            vec![
                order("order.placed", json!(1)),
                order("order.placed", json!("12 EUR")),
                order("order.placed", json!({})),
            ],
        )
        .await;
    let reason = assert_failed(r, 1, "order.placed", 1, "/items/0/price");
    assert!(
        reason.contains("number"),
        "the reason says what was wanted: {reason}"
    );
    let missing = NewEvent::json(ty("order.placed"), &json!({"lines": []}));
    assert_failed(
        store.append(&s, ExpectedRevision::Any, vec![missing]).await,
        0,
        "order.placed",
        1,
        "",
    );
    let not_json = NewEvent::bytes(
        ty("order.placed"),
        ContentType::new("application/octet-stream").expect("valid"),
        br#"{"items": []}"#.to_vec(),
    );
    assert_failed(
        store
            .append(&s, ExpectedRevision::Any, vec![not_json])
            .await,
        0,
        "order.placed",
        1,
        "",
    );
    assert_eq!(
        store.all_events().await,
        after_ok,
        "refused batches wrote nothing"
    );
    let info = store.stream_info(&s).await.expect("info");
    assert_eq!(info.last_revision, Revision(1));
    // Other versions and types have no schema.
    store
        .append(
            &s,
            ExpectedRevision::Exact(1),
            vec![
                order("order.placed", json!("v2 has no schema")).with_schema_version(2),
                order("order.shipped", json!("no schema either")),
            ],
        )
        .await
        .expect("events without a schema are not checked");
    // A `+json` content type is JSON too.
    let mut plus_json = order("order.placed", json!(3));
    plus_json.content_type = ContentType::new("application/vnd.order+json").expect("valid");
    store
        .append(&s, ExpectedRevision::Exact(3), vec![plus_json])
        .await
        .expect("+json data is checked as JSON and matches");
}

/// A conditional append (`append_with_condition`) is checked against the schemas like any
/// append: a failing event refuses the batch with the schema's error whatever the condition,
/// and a matching one is written when the condition holds.
pub async fn conditional_appends_are_checked_against_registered_schemas<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    store
        .register_schema(schema("order.placed", 1, order_schema()))
        .await
        .expect("register");
    let s = stream("order-c");
    let none_cancelled = || {
        AppendCondition::new(
            Query::from(QueryItem::of_types([ty("order.cancelled")]).expect("valid")),
            None,
        )
    };
    let before = store.all_events().await;
    assert_failed(
        store
            .append_with_condition(
                &s,
                ExpectedRevision::NoStream,
                vec![order("order.placed", json!("free"))],
                none_cancelled(),
            )
            .await,
        0,
        "order.placed",
        1,
        "/items/0/price",
    );
    assert_eq!(store.all_events().await, before, "nothing was written");
    store
        .append_with_condition(
            &s,
            ExpectedRevision::NoStream,
            vec![order("order.placed", json!(4.5))],
            none_cancelled(),
        )
        .await
        .expect("a matching event under a condition that holds");
    assert_eq!(store.all_events().await.len(), before.len() + 1);
}

/// Registering a schema changes nothing that was written: an event that would not match it
/// reads back as it was appended, from its stream and from `$all`.
pub async fn reads_never_change_after_a_schema_is_registered<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    let s = stream("order-2");
    let old = order("order.placed", json!("twelve"));
    store
        .append(&s, ExpectedRevision::NoStream, vec![old.clone()])
        .await
        .expect("append before the schema");
    let before = store
        .read_stream(&s, ReadStream::forward(10))
        .await
        .expect("read");
    store
        .register_schema(schema("order.placed", 1, order_schema()))
        .await
        .expect("register");
    let after = store
        .read_stream(&s, ReadStream::forward(10))
        .await
        .expect("read after");
    assert_eq!(after, before, "the stream reads the same");
    assert_eq!(after.events.len(), 1);
    assert_eq!(after.events[0].id, old.id);
    assert_eq!(after.events[0].data, old.data);
    let all = store.read_all(ReadAll::forward(100)).await.expect("$all");
    assert!(
        all.events
            .iter()
            .any(|e| e.id == old.id && e.data == old.data),
        "$all still has the old event as it was"
    );
    // But a new one like it is refused.
    assert_failed(
        store
            .append(
                &s,
                ExpectedRevision::Exact(0),
                vec![order("order.placed", json!("twelve"))],
            )
            .await,
        0,
        "order.placed",
        1,
        "/items/0/price",
    );
}

/// An import moves history as it was: it is not checked against the schemas (optional like
/// imports: a store that cannot import passes).
pub async fn imports_are_not_checked_against_schemas<S: EventStore>(store: &Arc<S>, _: Limits) {
    store
        .register_schema(schema("order.placed", 1, order_schema()))
        .await
        .expect("register");
    let s = stream("order-3");
    let old = order("order.placed", json!("from before the schema"));
    let batch = ImportBatch {
        first_revision: Revision(0),
        // Now: not earlier than the registration, the store's last event.
        events: vec![(old.clone(), Timestamp::now())],
    };
    match store
        .append_imported(&s, ExpectedRevision::NoStream, batch)
        .await
    {
        Err(e @ StoreError::Unsupported { .. }) => {
            eprintln!("imports_are_not_checked_against_schemas: skipped, the store cannot: {e}");
        }
        r => {
            r.expect("an import is not checked");
            let read = store
                .read_stream(&s, ReadStream::forward(10))
                .await
                .expect("read");
            assert_eq!(read.events.len(), 1);
            assert_eq!(read.events[0].data, old.data);
        }
    }
}
