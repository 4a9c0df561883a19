//! `append_imported`: events keep given timestamps and land at given revisions; event
//! timestamps never decrease, across reopens too; `list_known_streams` shows deletes.

use eventfold_core::{
    DeleteMode, EventStore, ExpectedRevision, ImportBatch, ListStreams, NewEvent, ReadStream,
    Revision, StoreError, StreamHead, Timestamp,
};

use crate::support::{event, open, stream};

/// An hour ago plus `us` microseconds: in the past, so the clock bound does not refuse it.
fn past(us: i64) -> Timestamp {
    Timestamp(Timestamp::now().micros() - 3_600_000_000 + us)
}

fn batch(first_revision: u64, events: Vec<(NewEvent, Timestamp)>) -> ImportBatch {
    ImportBatch {
        first_revision: Revision(first_revision),
        events,
    }
}

#[tokio::test]
async fn imports_keep_timestamps_and_refuse_to_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (stream("order-1"), stream("order-2"));
    let (t1, t2, t3) = (past(10), past(20), past(30));
    let first = vec![(event("a", 1), t1), (event("b", 2), t2)];
    {
        let e = open(dir.path());
        let r = e
            .append_imported(&a, ExpectedRevision::NoStream, batch(0, first.clone()))
            .await
            .unwrap();
        assert_eq!((r.first_revision.0, r.last_revision.0), (0, 1));
        // A retry of the same batch is a replay, as for an append.
        let again = e
            .append_imported(&a, ExpectedRevision::NoStream, batch(0, first.clone()))
            .await
            .unwrap();
        assert!(again.idempotent_replay);
        // A delete takes the clock's time; an import after it may still carry an older
        // timestamp, as long as no event has a later one: only events' times count.
        e.delete_stream(&a, ExpectedRevision::Exact(1), DeleteMode::Soft)
            .await
            .unwrap();
        // It must land where it says: revision 2 (after the deleted ones), not 0.
        let err = e
            .append_imported(
                &a,
                ExpectedRevision::NoStream,
                batch(0, vec![(event("c", 3), t3)]),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::ImportRevisionMismatch {
                    first_revision: Revision(0),
                    next_revision: Revision(2),
                    ..
                }
            ),
            "{err}"
        );
        e.append_imported(
            &a,
            ExpectedRevision::NoStream,
            batch(2, vec![(event("c", 3), t3)]),
        )
        .await
        .unwrap();
        // Earlier than the last event: refused, nothing written.
        let err = e
            .append_imported(
                &b,
                ExpectedRevision::NoStream,
                batch(0, vec![(event("x", 0), t2)]),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::ImportTimestampTooEarly { timestamp, last, .. } if *timestamp == t2 && *last == t3),
            "{err}"
        );
        assert!(err.to_string().contains("never decrease"), "{err}");
        // Decreasing inside a batch: refused too.
        let err = e
            .append_imported(
                &b,
                ExpectedRevision::NoStream,
                batch(
                    0,
                    vec![(event("x", 0), past(50)), (event("y", 1), past(40))],
                ),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "import_timestamp_too_early", "{err}");
        // Later than the clock: refused as invalid.
        let future = Timestamp(Timestamp::now().micros() + 3_600_000_000);
        let err = e
            .append_imported(
                &b,
                ExpectedRevision::NoStream,
                batch(0, vec![(event("x", 0), future)]),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_request", "{err}");
        assert!(
            e.read_stream(&b, ReadStream::forward(10)).await.is_err(),
            "nothing of b was written"
        );
        e.shutdown();
    }
    // Reopened: the timestamps are the imported ones, and the last event's still bounds imports.
    let e = open(dir.path());
    let slice = e.read_stream(&a, ReadStream::forward(10)).await.unwrap();
    assert_eq!(
        slice
            .events
            .iter()
            .map(|e| (e.revision.0, e.timestamp))
            .collect::<Vec<_>>(),
        [(2, t3)]
    );
    let err = e
        .append_imported(
            &b,
            ExpectedRevision::NoStream,
            batch(0, vec![(event("x", 0), t2)]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "import_timestamp_too_early", "{err}");
    // An ordinary append after an import takes the clock, never below the imported times.
    let r = e
        .append(&b, ExpectedRevision::NoStream, vec![event("z", 9)])
        .await
        .unwrap();
    let z = e.read_stream(&b, ReadStream::forward(1)).await.unwrap();
    assert_eq!(z.events[0].revision, r.first_revision);
    assert!(z.events[0].timestamp > t3);
    // And an import may not go below that one either.
    let err = e
        .append_imported(
            &a,
            ExpectedRevision::Any,
            batch(3, vec![(event("d", 4), past(40))]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "import_timestamp_too_early", "{err}");
}

#[tokio::test]
async fn known_streams_include_deleted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let (a, b, c) = (stream("a"), stream("b"), stream("c"));
    for s in [&a, &b, &c] {
        e.append(
            s,
            ExpectedRevision::NoStream,
            vec![event("x", 0), event("y", 1)],
        )
        .await
        .unwrap();
    }
    e.delete_stream(&a, ExpectedRevision::Any, DeleteMode::Soft)
        .await
        .unwrap();
    e.delete_stream(&b, ExpectedRevision::Any, DeleteMode::Hard)
        .await
        .unwrap();
    e.delete_stream(&stream("never"), ExpectedRevision::Any, DeleteMode::Hard)
        .await
        .unwrap();
    let page = e
        .list_known_streams(ListStreams {
            limit: 3,
            ..ListStreams::default()
        })
        .await
        .unwrap();
    let heads: Vec<(&str, StreamHead)> = page
        .streams
        .iter()
        .map(|k| (k.stream.as_str(), k.head))
        .collect();
    let head = |next_revision, deleted_before, tombstoned| StreamHead {
        next_revision,
        deleted_before,
        tombstoned,
    };
    assert_eq!(
        heads,
        [
            ("a", head(2, 2, false)),
            ("b", head(2, 0, true)),
            ("c", head(2, 0, false))
        ]
    );
    assert_eq!(page.next.as_ref().map(|n| n.as_str()), Some("c"));
    let rest = e
        .list_known_streams(ListStreams {
            limit: 3,
            after: Some("c".into()),
            ..ListStreams::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.streams.len(), 1);
    assert!(rest.streams[0].head.tombstoned && rest.next.is_none());
}
