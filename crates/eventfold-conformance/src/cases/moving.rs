//! What moving a store needs (`eventfold export` / `eventfold import`): appends with given
//! timestamps that land at given revisions, and a listing of every stream, deleted ones
//! included. Optional: a store that answers `Unsupported` passes (the case says so and stops).

use std::sync::Arc;

use eventfold_core::{
    DeleteMode, EventStore, ExpectedRevision, ImportBatch, Limits, ListStreams, ReadStream,
    Revision, StoreError, StreamHead, StreamMetadata, Timestamp,
};

use crate::support::{ev, stream};

/// Whether the store said it cannot do this (the case then ends, passing).
fn unsupported<T>(r: &Result<T, StoreError>, case: &str) -> bool {
    match r {
        Err(e @ StoreError::Unsupported { .. }) => {
            eprintln!("{case}: skipped, the store cannot: {e}");
            true
        }
        _ => false,
    }
}

/// An imported batch keeps its timestamps and lands at its revision or is refused; a replay is a
/// replay; event timestamps never decrease (an earlier one is refused, whatever a delete in
/// between took); a timestamp later than the store's clock is refused.
pub async fn import_keeps_timestamps_and_revisions<S: EventStore>(store: &Arc<S>, _: Limits) {
    let (a, b) = (stream("import-1"), stream("import-2"));
    let hour_ago = Timestamp::now().micros() - 3_600_000_000;
    let (t1, t2, t3) = (
        Timestamp(hour_ago),
        Timestamp(hour_ago + 1),
        Timestamp(hour_ago + 2),
    );
    let batch = |first: u64, events: Vec<(eventfold_core::NewEvent, Timestamp)>| ImportBatch {
        first_revision: Revision(first),
        events,
    };
    let first = batch(0, vec![(ev("a", 0), t1), (ev("b", 1), t2)]);
    let r = store
        .append_imported(&a, ExpectedRevision::NoStream, first.clone())
        .await;
    if unsupported(&r, "import_keeps_timestamps_and_revisions") {
        return;
    }
    let r = r.expect("import");
    assert_eq!(
        (r.first_revision, r.last_revision),
        (Revision(0), Revision(1))
    );
    let replay = store
        .append_imported(&a, ExpectedRevision::NoStream, first)
        .await
        .expect("a retry");
    assert!(replay.idempotent_replay, "{replay:?}");
    let read = store
        .read_stream(&a, ReadStream::forward(10))
        .await
        .expect("read");
    assert_eq!(
        read.events.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
        [t1, t2]
    );
    store
        .delete_stream(&a, ExpectedRevision::Exact(1), DeleteMode::Soft)
        .await
        .expect("soft delete");
    let wrong = store
        .append_imported(
            &a,
            ExpectedRevision::NoStream,
            batch(0, vec![(ev("c", 2), t3)]),
        )
        .await;
    assert!(
        matches!(
            wrong,
            Err(StoreError::ImportRevisionMismatch {
                next_revision: Revision(2),
                ..
            })
        ),
        "{wrong:?}"
    );
    store
        .append_imported(
            &a,
            ExpectedRevision::NoStream,
            batch(2, vec![(ev("c", 2), t3)]),
        )
        .await
        .expect("an import after the soft delete, older than the delete");
    let early = store
        .append_imported(
            &b,
            ExpectedRevision::NoStream,
            batch(0, vec![(ev("x", 0), t2)]),
        )
        .await;
    assert!(
        matches!(&early, Err(StoreError::ImportTimestampTooEarly { timestamp, last, .. }) if *timestamp == t2 && *last == t3),
        "{early:?}"
    );
    let future = Timestamp(Timestamp::now().micros() + 3_600_000_000);
    let late = store
        .append_imported(
            &b,
            ExpectedRevision::NoStream,
            batch(0, vec![(ev("x", 0), future)]),
        )
        .await;
    assert_eq!(
        late.map_err(|e| e.code().to_owned()).err().as_deref(),
        Some("invalid_request")
    );
    assert!(
        matches!(
            store.read_stream(&b, ReadStream::forward(1)).await,
            Err(StoreError::StreamNotFound { .. })
        ),
        "nothing of the refused imports was written"
    );
}

/// `list_known_streams` lists every stream, soft- and hard-deleted ones included, with its head
/// and metadata, in pages.
pub async fn known_streams_list_deleted_ones<S: EventStore>(store: &Arc<S>, _: Limits) {
    let first = store
        .list_known_streams(ListStreams {
            limit: 10,
            ..ListStreams::default()
        })
        .await;
    if unsupported(&first, "known_streams_list_deleted_ones") {
        return;
    }
    assert!(first.expect("list").streams.is_empty());
    let (a, b, c) = (stream("known-a"), stream("known-b"), stream("known-c"));
    for s in [&a, &b, &c] {
        store
            .append(s, ExpectedRevision::NoStream, vec![ev("x", 0), ev("y", 1)])
            .await
            .expect("append");
    }
    let metadata = StreamMetadata {
        max_count: Some(5),
        ..StreamMetadata::default()
    };
    store
        .set_metadata(&a, metadata.clone())
        .await
        .expect("set metadata");
    store
        .delete_stream(&a, ExpectedRevision::Any, DeleteMode::Soft)
        .await
        .expect("soft delete");
    store
        .delete_stream(&b, ExpectedRevision::Any, DeleteMode::Hard)
        .await
        .expect("hard delete");
    let page = store
        .list_known_streams(ListStreams {
            limit: 2,
            ..ListStreams::default()
        })
        .await
        .expect("list");
    let head = |next_revision, deleted_before, tombstoned| StreamHead {
        next_revision,
        deleted_before,
        tombstoned,
    };
    assert_eq!(
        page.streams
            .iter()
            .map(|k| (k.stream.as_str(), k.head))
            .collect::<Vec<_>>(),
        [
            ("known-a", head(2, 2, false)),
            ("known-b", head(2, 0, true))
        ]
    );
    assert_eq!(page.streams[0].metadata, metadata);
    assert_eq!(page.next.as_ref(), Some(&b));
    let rest = store
        .list_known_streams(ListStreams {
            limit: 2,
            after: Some(b.as_str().to_owned()),
            ..ListStreams::default()
        })
        .await
        .expect("list");
    assert_eq!(
        rest.streams
            .iter()
            .map(|k| (k.stream.as_str(), k.head))
            .collect::<Vec<_>>(),
        [("known-c", head(2, 0, false))]
    );
    assert!(rest.next.is_none());
}
