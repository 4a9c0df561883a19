//! Soft and hard deletes.

use std::sync::Arc;

use eventfold_core::{
    DeleteMode, EventStore, ExpectedRevision, Limits, ListStreams, ReadStream, Revision,
    StreamMetadata, StreamName, SubscribeFrom,
};

use crate::support::{
    StoreExt as _, assert_deleted, assert_not_found, assert_wrong, evs, next, stream,
};

async fn listed<S: EventStore>(store: &Arc<S>) -> Vec<StreamName> {
    store
        .list_streams(ListStreams {
            limit: 1000,
            ..ListStreams::default()
        })
        .await
        .expect("list streams")
        .streams
}

/// A soft delete checks the expected revision; then the stream reads as not found, leaves
/// `$all` and the listing, counts as not existing for the expected revision, and appending
/// again continues the revisions after the last one, showing only the new events.
pub async fn soft_delete<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("soft-1");
    store
        .append(&s, ExpectedRevision::Any, evs("a", 3))
        .await
        .expect("append");
    let keep = stream("soft-keep");
    store
        .append(&keep, ExpectedRevision::Any, evs("k", 1))
        .await
        .expect("append");
    for expected in [ExpectedRevision::Exact(0), ExpectedRevision::NoStream] {
        assert_wrong(
            store.delete_stream(&s, expected, DeleteMode::Soft).await,
            &s,
            expected,
            Some(2),
        );
    }
    assert_eq!(
        store.stream_revs(&s).await,
        [0, 1, 2],
        "a refused delete deletes nothing"
    );
    store
        .delete_stream(&s, ExpectedRevision::Exact(2), DeleteMode::Soft)
        .await
        .expect("soft delete");
    assert_not_found(store.read_stream(&s, ReadStream::forward(10)).await, &s);
    assert_not_found(store.read_stream(&s, ReadStream::backward(10)).await, &s);
    assert_not_found(store.stream_info(&s).await, &s);
    assert_eq!(
        store
            .all_events()
            .await
            .iter()
            .map(|e| e.stream.clone())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&keep),
        "the deleted events leave $all"
    );
    assert_eq!(listed(store).await, std::slice::from_ref(&keep));
    assert_not_found(
        store
            .delete_stream(&s, ExpectedRevision::Any, DeleteMode::Soft)
            .await,
        &s,
    );
    for expected in [ExpectedRevision::Exists, ExpectedRevision::Exact(2)] {
        assert_wrong(
            store.append(&s, expected, evs("a", 1)).await,
            &s,
            expected,
            None,
        );
    }
    let r = store
        .append(&s, ExpectedRevision::NoStream, evs("b", 2))
        .await
        .expect("no-stream append after the soft delete");
    assert_eq!(
        (r.first_revision, r.last_revision),
        (Revision(3), Revision(4)),
        "revisions continue after the last one"
    );
    assert_eq!(
        store.page(&s, ReadStream::forward(10)).await,
        (vec![3, 4], None)
    );
    assert_eq!(
        store.page(&s, ReadStream::backward(10)).await,
        (vec![4, 3], None)
    );
    let info = store.stream_info(&s).await.expect("info");
    assert_eq!(
        (info.last_revision, info.last_position, info.event_count),
        (Revision(4), r.last_position, 2)
    );
    assert_eq!(
        store
            .all_events()
            .await
            .iter()
            .map(|e| (e.stream.to_string(), e.revision.0))
            .collect::<Vec<_>>(),
        [
            ("soft-keep".to_owned(), 0),
            ("soft-1".to_owned(), 3),
            ("soft-1".to_owned(), 4)
        ]
    );
    assert_eq!(listed(store).await, [s.clone(), keep]);
    store
        .append(&s, ExpectedRevision::Exists, evs("c", 1))
        .await
        .expect("exists once re-created");
    // A subscription from the start sees only what can be read.
    let mut sub = store.subscribe_stream(&s, SubscribeFrom::Start);
    assert_eq!(next(&mut sub).await.revision, Revision(3));
}

/// Soft-deleting a stream that was never written is `StreamNotFound`.
pub async fn soft_delete_of_a_missing_stream<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("soft-missing-1");
    assert_not_found(
        store
            .delete_stream(&s, ExpectedRevision::Any, DeleteMode::Soft)
            .await,
        &s,
    );
    store
        .append(&s, ExpectedRevision::NoStream, evs("a", 1))
        .await
        .expect("the name is still free");
}

/// A hard delete checks the expected revision; then every read, append, metadata call, info
/// and delete of the stream is `StreamDeleted`, and its events leave `$all`.
pub async fn hard_delete<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("hard-1");
    store
        .append(&s, ExpectedRevision::Any, evs("a", 2))
        .await
        .expect("append");
    let keep = stream("hard-keep");
    store
        .append(&keep, ExpectedRevision::Any, evs("a", 1))
        .await
        .expect("append");
    assert_wrong(
        store
            .delete_stream(&s, ExpectedRevision::Exact(5), DeleteMode::Hard)
            .await,
        &s,
        ExpectedRevision::Exact(5),
        Some(1),
    );
    assert_eq!(
        store.stream_revs(&s).await,
        [0, 1],
        "a refused delete deletes nothing"
    );
    store
        .delete_stream(&s, ExpectedRevision::Exact(1), DeleteMode::Hard)
        .await
        .expect("hard delete");
    assert_deleted(store.read_stream(&s, ReadStream::forward(10)).await, &s);
    assert_deleted(store.read_stream(&s, ReadStream::backward(10)).await, &s);
    for expected in [
        ExpectedRevision::Any,
        ExpectedRevision::NoStream,
        ExpectedRevision::Exact(1),
    ] {
        assert_deleted(store.append(&s, expected, evs("a", 1)).await, &s);
    }
    assert_deleted(store.stream_info(&s).await, &s);
    assert_deleted(store.get_metadata(&s).await, &s);
    assert_deleted(store.set_metadata(&s, StreamMetadata::default()).await, &s);
    assert_deleted(
        store
            .delete_stream(&s, ExpectedRevision::Any, DeleteMode::Hard)
            .await,
        &s,
    );
    assert_deleted(
        store
            .delete_stream(&s, ExpectedRevision::Any, DeleteMode::Soft)
            .await,
        &s,
    );
    assert_eq!(
        store
            .all_events()
            .await
            .iter()
            .map(|e| e.stream.clone())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&keep),
        "the deleted events leave $all"
    );
    assert_eq!(listed(store).await, std::slice::from_ref(&keep));
}

/// A hard delete of a soft-deleted stream, or of a name never written, tombstones it too.
pub async fn hard_delete_of_a_missing_or_soft_deleted_stream<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    let never = stream("hard-never-1");
    store
        .delete_stream(&never, ExpectedRevision::Any, DeleteMode::Hard)
        .await
        .expect("tombstone a name never written");
    assert_deleted(
        store
            .append(&never, ExpectedRevision::Any, evs("a", 1))
            .await,
        &never,
    );
    assert_deleted(
        store.read_stream(&never, ReadStream::forward(1)).await,
        &never,
    );
    let soft = stream("hard-soft-1");
    store
        .append(&soft, ExpectedRevision::Any, evs("a", 2))
        .await
        .expect("append");
    store
        .delete_stream(&soft, ExpectedRevision::Any, DeleteMode::Soft)
        .await
        .expect("soft delete");
    store
        .delete_stream(&soft, ExpectedRevision::Any, DeleteMode::Hard)
        .await
        .expect("hard delete after a soft delete");
    assert_deleted(
        store
            .append(&soft, ExpectedRevision::NoStream, evs("a", 1))
            .await,
        &soft,
    );
    assert!(store.all_events().await.is_empty());
    assert!(listed(store).await.is_empty());
}
