//! Appends: atomic batches, revisions, positions, the expected-revision check.

use std::sync::Arc;

use eventfold_core::{
    DeleteMode, EventStore, ExpectedRevision, Limits, ReadStream, Revision, StoreError,
};

use crate::support::{StoreExt as _, assert_not_found, assert_wrong, ev, evs, positions, stream};

/// A batch gets contiguous revisions from 0, strictly increasing positions (across batches and
/// streams too), and the result names exactly what was written.
pub async fn append_assigns_contiguous_revisions_and_increasing_positions<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    let s = stream("order-1");
    let a = store
        .append(&s, ExpectedRevision::Any, evs("a", 3))
        .await
        .expect("append the first batch");
    assert_eq!(a.stream, s);
    assert_eq!(
        (a.first_revision, a.last_revision),
        (Revision(0), Revision(2))
    );
    assert!(a.first_position < a.last_position, "{a:?}");
    assert!(!a.idempotent_replay);
    let o = store
        .append(
            &stream("append-other-1"),
            ExpectedRevision::Any,
            evs("c", 1),
        )
        .await
        .expect("append to another stream");
    assert_eq!(
        (o.first_revision, o.last_revision),
        (Revision(0), Revision(0))
    );
    assert_eq!(o.first_position, o.last_position, "one event, one position");
    assert!(
        o.first_position > a.last_position,
        "positions increase across streams"
    );
    let b = store
        .append(&s, ExpectedRevision::Any, evs("b", 2))
        .await
        .expect("append the second batch");
    assert_eq!(
        (b.first_revision, b.last_revision),
        (Revision(3), Revision(4))
    );
    assert!(
        b.first_position > o.last_position,
        "positions increase across batches"
    );
    assert!(b.first_position < b.last_position);

    let read = store.stream_events(&s).await;
    assert_eq!(
        read.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    let p = positions(&read);
    assert!(
        p.windows(2).all(|w| w[0] < w[1]),
        "positions strictly increase: {p:?}"
    );
    assert_eq!((p[0], p[2]), (a.first_position, a.last_position));
    assert_eq!((p[3], p[4]), (b.first_position, b.last_position));
    assert_eq!(
        read.iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["a", "a", "a", "b", "b"],
        "the events in the order of their batches"
    );
    let all = store.all_events().await;
    assert_eq!(
        positions(&all),
        [p[0], p[1], p[2], o.first_position, p[3], p[4]],
        "$all holds every event in commit order"
    );
}

/// An empty batch is refused as invalid and writes nothing.
pub async fn empty_batch_is_refused<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("empty-1");
    let r = store.append(&s, ExpectedRevision::Any, vec![]).await;
    assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    assert_not_found(store.read_stream(&s, ReadStream::forward(10)).await, &s);
    store
        .append(&s, ExpectedRevision::Any, evs("a", 1))
        .await
        .expect("append");
    let r = store.append(&s, ExpectedRevision::Exact(0), vec![]).await;
    assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    assert_eq!(store.stream_revs(&s).await, [0]);
}

/// `Any` appends to a new stream, an existing one and a soft-deleted one.
pub async fn expected_any<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("any-1");
    let r = store
        .append(&s, ExpectedRevision::Any, evs("a", 1))
        .await
        .expect("any on a new stream");
    assert_eq!(r.first_revision, Revision(0));
    let r = store
        .append(&s, ExpectedRevision::Any, evs("a", 2))
        .await
        .expect("any on an existing stream");
    assert_eq!(
        (r.first_revision, r.last_revision),
        (Revision(1), Revision(2))
    );
    store
        .delete_stream(&s, ExpectedRevision::Any, DeleteMode::Soft)
        .await
        .expect("soft delete");
    let r = store
        .append(&s, ExpectedRevision::Any, evs("a", 1))
        .await
        .expect("any on a soft-deleted stream");
    assert_eq!(r.first_revision, Revision(3));
}

/// `NoStream` succeeds only while the stream does not exist.
pub async fn expected_no_stream<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("nostream-1");
    let r = store
        .append(&s, ExpectedRevision::NoStream, evs("a", 2))
        .await
        .expect("no-stream on a new stream");
    assert_eq!(
        (r.first_revision, r.last_revision),
        (Revision(0), Revision(1))
    );
    assert_wrong(
        store
            .append(&s, ExpectedRevision::NoStream, evs("a", 1))
            .await,
        &s,
        ExpectedRevision::NoStream,
        Some(1),
    );
    assert_eq!(store.stream_revs(&s).await, [0, 1]);
}

/// `Exists` succeeds only once the stream has an event.
pub async fn expected_exists<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("exists-1");
    assert_wrong(
        store
            .append(&s, ExpectedRevision::Exists, evs("a", 1))
            .await,
        &s,
        ExpectedRevision::Exists,
        None,
    );
    assert_not_found(store.read_stream(&s, ReadStream::forward(10)).await, &s);
    store
        .append(&s, ExpectedRevision::Any, evs("a", 2))
        .await
        .expect("append");
    let r = store
        .append(&s, ExpectedRevision::Exists, evs("a", 1))
        .await
        .expect("exists on an existing stream");
    assert_eq!(
        (r.first_revision, r.last_revision),
        (Revision(2), Revision(2))
    );
}

/// `Exact(n)` succeeds only when the stream's last revision is `n`.
pub async fn expected_exact<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("exact-1");
    assert_wrong(
        store
            .append(&s, ExpectedRevision::Exact(0), evs("a", 1))
            .await,
        &s,
        ExpectedRevision::Exact(0),
        None,
    );
    store
        .append(&s, ExpectedRevision::Any, evs("a", 2))
        .await
        .expect("append");
    for stale in [0, 2, 100] {
        assert_wrong(
            store
                .append(&s, ExpectedRevision::Exact(stale), evs("a", 1))
                .await,
            &s,
            ExpectedRevision::Exact(stale),
            Some(1),
        );
    }
    let r = store
        .append(&s, ExpectedRevision::Exact(1), evs("a", 3))
        .await
        .expect("exact match");
    assert_eq!(
        (r.first_revision, r.last_revision),
        (Revision(2), Revision(4))
    );
    store
        .append(&s, ExpectedRevision::Exact(4), evs("a", 1))
        .await
        .expect("exact match on the new last revision");
    assert_eq!(store.stream_revs(&s).await, [0, 1, 2, 3, 4, 5]);
}

/// A refused append writes nothing: not to the stream, not to `$all`, and it does not move
/// the next revision or position.
pub async fn conflict_writes_nothing<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("conflict-1");
    let first = store
        .append(&s, ExpectedRevision::Any, evs("a", 2))
        .await
        .expect("append");
    let before = store.all_events().await;
    for expected in [
        ExpectedRevision::NoStream,
        ExpectedRevision::Exact(0),
        ExpectedRevision::Exact(7),
    ] {
        assert_wrong(
            store.append(&s, expected, evs("x", 3)).await,
            &s,
            expected,
            Some(1),
        );
    }
    let fresh = stream("conflict-2");
    assert_wrong(
        store
            .append(&fresh, ExpectedRevision::Exists, evs("x", 3))
            .await,
        &fresh,
        ExpectedRevision::Exists,
        None,
    );
    assert_eq!(store.all_events().await, before, "$all unchanged");
    assert_not_found(store.stream_info(&fresh).await, &fresh);
    let info = store.stream_info(&s).await.expect("stream info");
    assert_eq!((info.last_revision, info.event_count), (Revision(1), 2));
    let next = store
        .append(&s, ExpectedRevision::Exact(1), vec![ev("b", 0)])
        .await
        .expect("append after the conflicts");
    assert_eq!(next.first_revision, Revision(2), "no revision was used up");
    assert!(next.first_position > first.last_position);
}

/// Appends started with `append_sequenced` one after the other, without waiting for any
/// outcome, are judged in that order: a chain of exact expected revisions all succeeds, with
/// the revisions in the order sent; an append that fails (a wrong expected revision) fails
/// alone, and the ones after it are judged on what the ones before it wrote.
pub async fn sequenced_appends_are_judged_in_the_order_sent<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    let s = stream("sequenced-1");
    let mut pending = Vec::new();
    for i in 0..20u64 {
        let expected = match i {
            0 => ExpectedRevision::NoStream,
            // The ninth is wrong on purpose: revision 9 is not there yet.
            8 => ExpectedRevision::Exact(9),
            // The ones after it expect what the ones before it wrote.
            _ if i > 8 => ExpectedRevision::Exact(i - 2),
            _ => ExpectedRevision::Exact(i - 1),
        };
        pending.push(
            store
                .append_sequenced(&s, expected, evs(&format!("t{i}"), 1), None)
                .await,
        );
    }
    for (i, p) in pending.into_iter().enumerate() {
        let outcome = p.await;
        if i == 8 {
            assert_wrong(outcome, &s, ExpectedRevision::Exact(9), Some(7));
            continue;
        }
        let r = outcome.unwrap_or_else(|e| panic!("append {i}: {e}"));
        let want = if i > 8 { i as u64 - 1 } else { i as u64 };
        assert_eq!(r.first_revision, Revision(want), "append {i}");
    }
    let read = store.stream_events(&s).await;
    assert_eq!(
        read.iter()
            .map(|e| e.event_type.as_str().to_string())
            .collect::<Vec<_>>(),
        (0..20)
            .filter(|i| *i != 8)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>(),
        "the events in the order sent, the refused one absent"
    );
}
