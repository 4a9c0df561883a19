//! Sealing, opening and redaction on every read path of `Shredding`, over the in-memory store
//! (its raw events show what a store under it keeps) and the real key file.

use std::sync::Arc;

use eventfold_core::{
    ContentType, EventFilter, EventStore, EventType, ExpectedRevision, Limits, Metadata, NewEvent,
    ReadAll, ReadStream, RecordedEvent, StoreError, StreamName, SubscribeFrom,
};
use eventfold_memory::MemoryStore;
use eventfold_shred::{
    FileKeys, SEAL_OVERHEAD_BYTES_MAX, SEALED_CONTENT_TYPE, Shredding, Subject, SubjectKeys,
    sealed_limits,
};
use futures::StreamExt as _;

const SECRET: &str = "Ada-Lovelace-7f3e9c1b";

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("valid")
}

fn about(subject: &str, data: &serde_json::Value) -> NewEvent {
    let mut m = Metadata::new();
    m.insert("$subject".into(), subject.into());
    m.insert("correlation_id".into(), "c-1".into());
    NewEvent::json(EventType::new("user.registered").expect("valid"), data).with_metadata(m)
}

struct Fixture {
    _dir: tempfile::TempDir,
    raw: MemoryStore,
    keys: FileKeys,
    store: Shredding<MemoryStore>,
}

fn fixture(limits: Limits) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = FileKeys::open(dir.path()).expect("keys");
    let raw = MemoryStore::with_limits(sealed_limits(limits));
    let store = Shredding::new(raw.clone(), Arc::new(keys.clone()), limits);
    Fixture {
        _dir: dir,
        raw,
        keys,
        store,
    }
}

async fn all(store: &dyn EventStore) -> Vec<RecordedEvent> {
    store
        .read_all(ReadAll::forward(1_000))
        .await
        .expect("read $all")
        .events
}

fn has_secret(e: &RecordedEvent) -> bool {
    e.data.windows(SECRET.len()).any(|w| w == SECRET.as_bytes())
}

/// Data about a subject is stored sealed (the store underneath never sees the plaintext),
/// other events as they are; every read path gives the plaintext back.
#[tokio::test]
async fn subject_data_is_sealed_below_and_plain_above() {
    let f = fixture(Limits::DEFAULT);
    let data = serde_json::json!({"name": SECRET});
    let plain = NewEvent::json(
        EventType::new("note").expect("valid"),
        &serde_json::json!({"n": 1}),
    );
    f.store
        .append(
            &name("user-1"),
            ExpectedRevision::Any,
            vec![about("user-1", &data), plain.clone()],
        )
        .await
        .expect("append");
    let raw = all(&f.raw).await;
    assert_eq!(raw[0].content_type.as_str(), SEALED_CONTENT_TYPE);
    assert!(!has_secret(&raw[0]), "the plaintext reached the store");
    assert_eq!(raw[0].metadata.get_str("$subject"), Some("user-1"));
    assert_eq!(
        raw[1].data, plain.data,
        "events without a subject are untouched"
    );

    let read = f
        .store
        .read_stream(&name("user-1"), ReadStream::forward(10))
        .await
        .expect("read");
    assert_eq!(read.events[0].data_json(), Some(data.clone()));
    assert!(read.events[0].content_type.is_json());
    assert_eq!(all(&f.store).await[0].data_json(), Some(data.clone()));
    let mut sub = f
        .store
        .subscribe_all(SubscribeFrom::Start, EventFilter::default());
    let first = sub.next().await.expect("an event").expect("ok");
    assert_eq!(first.data_json(), Some(data));
}

/// After the key is deleted, every read path returns the events with empty data and the
/// marker, never an error; the subject's later events get a new key and read normally; other
/// subjects are untouched.
#[tokio::test]
async fn deleting_the_key_redacts_on_every_read_path() {
    let f = fixture(Limits::DEFAULT);
    let s = name("user-1");
    f.store
        .append(
            &s,
            ExpectedRevision::Any,
            vec![
                about("user-1", &serde_json::json!({"name": SECRET})),
                about("user-2", &serde_json::json!({"name": "Grace"})),
            ],
        )
        .await
        .expect("append");
    f.keys
        .delete(&Subject::new("user-1").expect("valid"))
        .await
        .expect("delete");
    f.store
        .append(
            &s,
            ExpectedRevision::Any,
            vec![about("user-1", &serde_json::json!({"name": "after"}))],
        )
        .await
        .expect("append after the deletion");

    let check = |events: &[RecordedEvent]| {
        assert_eq!(events.len(), 3);
        assert!(events[0].data.is_empty());
        assert_eq!(
            events[0].metadata.get_str("$redacted"),
            Some("subject-key-deleted")
        );
        assert!(
            events[0].content_type.is_json(),
            "its own content type is kept"
        );
        assert_eq!(events[0].metadata.get_str("correlation_id"), Some("c-1"));
        assert_eq!(
            events[1].data_json(),
            Some(serde_json::json!({"name": "Grace"}))
        );
        assert_eq!(events[1].metadata.get("$redacted"), None);
        assert_eq!(
            events[2].data_json(),
            Some(serde_json::json!({"name": "after"}))
        );
    };
    check(
        &f.store
            .read_stream(&s, ReadStream::forward(10))
            .await
            .expect("read")
            .events,
    );
    check(&all(&f.store).await);
    let sub: Vec<RecordedEvent> = f
        .store
        .subscribe_stream(&s, SubscribeFrom::Start)
        .take(3)
        .map(|r| r.expect("no error on a redacted event"))
        .collect()
        .await;
    check(&sub);
    let sub: Vec<RecordedEvent> = f
        .store
        .subscribe_all(SubscribeFrom::Start, EventFilter::default())
        .take(3)
        .map(|r| r.expect("no error on a redacted event"))
        .collect()
        .await;
    check(&sub);
}

/// Sealed data that does not authenticate (damaged, or copied to another event) is an error,
/// not a redaction; so is sealed data whose key the store never had.
#[tokio::test]
async fn damaged_or_keyless_sealed_data_is_corrupt_not_redacted() {
    let f = fixture(Limits::DEFAULT);
    f.store
        .append(
            &name("user-1"),
            ExpectedRevision::Any,
            vec![about("user-1", &serde_json::json!({"name": SECRET}))],
        )
        .await
        .expect("append");
    let sealed = all(&f.raw).await.remove(0);
    // The same sealed bytes written under another event id: they do not open there.
    let mut moved = NewEvent::bytes(
        EventType::new("user.registered").expect("valid"),
        ContentType::new(SEALED_CONTENT_TYPE).expect("valid"),
        sealed.data.clone(),
    );
    moved.metadata = sealed.metadata.clone();
    f.raw
        .append(&name("user-2"), ExpectedRevision::Any, vec![moved])
        .await
        .expect("raw append");
    match f
        .store
        .read_stream(&name("user-2"), ReadStream::forward(10))
        .await
    {
        Err(StoreError::Corrupt { detail, .. }) => {
            assert!(detail.contains("does not authenticate"), "{detail}")
        }
        other => panic!("moved ciphertext: {other:?}"),
    }
    // A store whose key file was lost: the same events, a fresh key store.
    let dir = tempfile::tempdir().expect("tempdir");
    let lost = Shredding::new(
        f.raw.clone(),
        Arc::new(FileKeys::open(dir.path()).expect("keys")),
        Limits::DEFAULT,
    );
    match lost
        .read_stream(&name("user-1"), ReadStream::forward(10))
        .await
    {
        Err(StoreError::Corrupt { detail, .. }) => {
            assert!(
                detail.contains("no key") && detail.contains("restore"),
                "{detail}"
            )
        }
        other => panic!("lost keys: {other:?}"),
    }
}

/// What only the store writes is refused from clients, a subject must be a valid id, and the
/// size limits are the plaintext's: an event exactly at the limit is taken (sealed, it is
/// larger), one byte more is refused.
#[tokio::test]
async fn appends_are_checked_as_the_client_sent_them() {
    let limits = Limits {
        event_bytes_max: 4_096,
        ..Limits::DEFAULT
    };
    let f = fixture(limits);
    let s = name("user-1");
    let refused = |e: NewEvent| {
        let store = &f.store;
        let s = s.clone();
        async move {
            match store.append(&s, ExpectedRevision::Any, vec![e]).await {
                Err(StoreError::Invalid(v)) => v,
                other => panic!("accepted: {other:?}"),
            }
        }
    };
    let mut redacted = about("user-1", &serde_json::json!(1));
    redacted
        .metadata
        .insert("$redacted".into(), "subject-key-deleted".into());
    assert_eq!(refused(redacted).await.what, "metadata");
    let mut not_string = about("user-1", &serde_json::json!(1));
    not_string.metadata.insert("$subject".into(), 42.into());
    assert_eq!(refused(not_string).await.what, "subject");
    assert_eq!(
        refused(about("a\nb", &serde_json::json!(1))).await.what,
        "subject"
    );
    let sealed_type = NewEvent::bytes(
        EventType::new("t").expect("valid"),
        ContentType::new(SEALED_CONTENT_TYPE).expect("valid"),
        vec![1],
    );
    assert_eq!(refused(sealed_type).await.what, "content type");

    let sized = |n: usize| {
        let mut e = about("user-1", &serde_json::json!(1));
        let meta = e.metadata.json_len();
        e.data = vec![b'7'; n - meta];
        e
    };
    f.store
        .append(&s, ExpectedRevision::Any, vec![sized(4_096)])
        .await
        .expect("an event at the limit");
    let stored = all(&f.raw).await.remove(0);
    assert!(stored.data.len() > 4_096 - stored.metadata.json_len());
    assert!(stored.data.len() <= 4_096 + SEAL_OVERHEAD_BYTES_MAX);
    match f
        .store
        .append(&s, ExpectedRevision::Any, vec![sized(4_097)])
        .await
    {
        Err(StoreError::LimitExceeded { max, actual, .. }) => {
            assert_eq!((max, actual), (4_096, 4_097))
        }
        other => panic!("over the limit: {other:?}"),
    }
}

/// An import (a move from another store, with original timestamps) is sealed like an append,
/// and the deleted-streams listing goes through: without the forwarding, `Shredding` refused
/// both with `unsupported_by_store` (the trait's defaults), so `eventfold import` failed on
/// every embedded server.
#[tokio::test]
async fn imports_are_sealed_like_appends_and_listings_go_through() {
    let f = fixture(Limits::DEFAULT);
    let data = serde_json::json!({"name": SECRET});
    let at = eventfold_core::Timestamp(1_700_000_000_000_000);
    let batch = eventfold_core::ImportBatch {
        first_revision: eventfold_core::Revision(0),
        events: vec![(about("user-9", &data), at)],
    };
    f.store
        .append_imported(&name("user-9"), ExpectedRevision::NoStream, batch)
        .await
        .expect("import");
    let raw = all(&f.raw).await;
    assert_eq!(raw.len(), 1);
    assert!(
        !has_secret(&raw[0]),
        "the store underneath got the plaintext"
    );
    assert_eq!(raw[0].content_type.as_str(), SEALED_CONTENT_TYPE);
    assert_eq!(raw[0].timestamp, at);
    let read = all(&f.store).await;
    assert!(has_secret(&read[0]));
    assert_eq!(read[0].timestamp, at);
    let known = f
        .store
        .list_known_streams(eventfold_core::ListStreams {
            limit: 100,
            ..eventfold_core::ListStreams::default()
        })
        .await
        .expect("list known streams");
    assert_eq!(known.streams.len(), 1);
}
