//! Idempotency by event id: a batch that repeats one earlier append to the same stream (same
//! ids, same order) is answered with the first result and writes nothing, for as long as that
//! append is inside the store's idempotency window; a batch that shares ids with the window
//! otherwise is refused with `DuplicateEventId`. Beyond the window only the stream's most
//! recent batch is recognized.
//!
//! The cases of this file run on a store with its default window (a million positions, a day).
//! The cases that need a small window (eviction) are at the end; they take a store built with
//! the window they give (see [`crate::idempotency_window_tests`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{
    AppendResult, EventId, EventStore, ExpectedRevision, IdempotencyWindow, Limits, NewEvent,
    Revision, StoreError, StoreResult, StreamName,
};
use tokio::sync::Barrier;

use crate::support::{StoreExt as _, assert_wrong, evs, stream};

/// The fields of a result that a replay must repeat.
fn where_written(r: &AppendResult) -> impl PartialEq + std::fmt::Debug + use<> {
    (
        r.stream.clone(),
        r.first_revision,
        r.last_revision,
        r.first_position,
        r.last_position,
    )
}

/// Asserts `r` is `DuplicateEventId` for `stream` naming `id`.
#[track_caller]
fn assert_duplicate<T: std::fmt::Debug>(r: StoreResult<T>, s: &StreamName, id: EventId) {
    match r {
        Err(StoreError::DuplicateEventId { stream, id: got }) => {
            assert_eq!((&stream, got), (s, id), "DuplicateEventId {{ stream, id }}")
        }
        other => panic!("expected DuplicateEventId {{ stream: {s}, id: {id} }}, got {other:?}"),
    }
}

/// The ids of the visible events of `s`, in revision order.
async fn ids_of<S: EventStore>(store: &Arc<S>, s: &StreamName) -> Vec<EventId> {
    store.stream_events(s).await.iter().map(|e| e.id).collect()
}

fn ids(events: &[NewEvent]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// Sending the most recent batch again answers the original result with `idempotent_replay`,
/// even after other streams were written, and writes nothing.
pub async fn idempotent_retry_returns_the_first_result<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("idem-1");
    store
        .append(&s, ExpectedRevision::Any, evs("x", 1))
        .await
        .expect("append");
    let batch = evs("a", 3);
    let first = store
        .append(&s, ExpectedRevision::Exact(0), batch.clone())
        .await
        .expect("append the batch");
    assert!(!first.idempotent_replay);
    store
        .append(&stream("idem-other"), ExpectedRevision::Any, evs("y", 2))
        .await
        .expect("append to another stream");
    let before = store.all_events().await;
    for expected in [ExpectedRevision::Exact(0), ExpectedRevision::Any] {
        let again = store
            .append(&s, expected, batch.clone())
            .await
            .expect("retry of the most recent batch");
        assert!(again.idempotent_replay, "{again:?}");
        assert_eq!(where_written(&again), where_written(&first));
    }
    assert_eq!(
        store.all_events().await,
        before,
        "nothing written by the retries"
    );
    let read = store.stream_events(&s).await;
    assert_eq!(
        read.iter()
            .map(|e| (e.revision.0, e.id))
            .collect::<Vec<_>>(),
        [
            (0, read[0].id),
            (1, batch[0].id),
            (2, batch[1].id),
            (3, batch[2].id)
        ],
        "no duplicates"
    );
}

/// The replay is decided before the expected revision: a retried `no-stream` append (or one
/// with any stale expectation) is a replay, not a conflict.
pub async fn idempotent_retry_is_decided_before_the_expected_revision<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    let s = stream("idem-2");
    let batch = evs("a", 2);
    let first = store
        .append(&s, ExpectedRevision::NoStream, batch.clone())
        .await
        .expect("append");
    for expected in [
        ExpectedRevision::NoStream,
        ExpectedRevision::Exact(0),
        ExpectedRevision::Exact(99),
        ExpectedRevision::Exists,
    ] {
        let again = store
            .append(&s, expected, batch.clone())
            .await
            .unwrap_or_else(|e| panic!("a retry expecting {expected} must be a replay: {e}"));
        assert!(again.idempotent_replay, "{again:?}");
        assert_eq!(where_written(&again), where_written(&first));
    }
    assert_eq!(store.stream_revs(&s).await, [0, 1]);
}

/// A retry that arrives after other appends to the same stream is still a replay of its
/// original (inside the window): the original's revisions and positions come back, expected
/// revision or not, and nothing is written.
pub async fn a_retry_after_later_appends_to_the_stream_replays<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    let s = stream("idem-3");
    let old = evs("a", 2);
    let first = store
        .append(&s, ExpectedRevision::NoStream, old.clone())
        .await
        .expect("append");
    let single = evs("b", 1);
    let second = store
        .append(&s, ExpectedRevision::Exact(1), single.clone())
        .await
        .expect("append");
    store
        .append(&s, ExpectedRevision::Exact(2), evs("c", 3))
        .await
        .expect("append");
    for (batch, original) in [(&old, &first), (&single, &second)] {
        for expected in [
            ExpectedRevision::Any,
            ExpectedRevision::NoStream,
            ExpectedRevision::Exact(0),
        ] {
            let again = store
                .append(&s, expected, batch.clone())
                .await
                .unwrap_or_else(|e| panic!("a retry of an earlier batch must be a replay: {e}"));
            assert!(again.idempotent_replay, "{again:?}");
            assert_eq!(where_written(&again), where_written(original));
        }
    }
    assert_eq!(store.stream_revs(&s).await, (0..6).collect::<Vec<u64>>());
    // Still checked like any append afterwards: the stream is at revision 5.
    assert_wrong(
        store
            .append(&s, ExpectedRevision::Exact(2), evs("d", 1))
            .await,
        &s,
        ExpectedRevision::Exact(2),
        Some(5),
    );
    // A soft delete hides the events; a retry is still answered with the original result.
    store
        .delete_stream(&s, ExpectedRevision::Any, eventfold_core::DeleteMode::Soft)
        .await
        .expect("soft delete");
    let again = store
        .append(&s, ExpectedRevision::NoStream, old.clone())
        .await
        .expect("a retry after a soft delete");
    assert!(again.idempotent_replay, "{again:?}");
    assert_eq!(where_written(&again), where_written(&first));
}

/// A batch that shares only some ids with an earlier append (a part of it, more than it, its
/// ids reordered, ids of two appends) is refused with `DuplicateEventId` naming the first seen
/// id, whatever its expected revision, and nothing is written.
pub async fn partial_overlap_is_refused<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("idem-4");
    let one = evs("a", 3);
    let two = evs("b", 2);
    store
        .append(&s, ExpectedRevision::NoStream, one.clone())
        .await
        .expect("append");
    store
        .append(&s, ExpectedRevision::Exact(2), two.clone())
        .await
        .expect("append");
    let before = store.all_events().await;
    let fresh = evs("c", 1);
    let cases: Vec<(Vec<NewEvent>, EventId)> = vec![
        (vec![one[0].clone()], one[0].id),
        (vec![one[1].clone(), one[2].clone()], one[1].id),
        (two[..1].to_vec(), two[0].id),
        ([one.clone(), fresh.clone()].concat(), one[0].id),
        ([fresh.clone(), two.clone()].concat(), two[0].id),
        (
            vec![one[1].clone(), one[0].clone(), one[2].clone()],
            one[1].id,
        ),
        (vec![one[2].clone(), two[0].clone()], one[2].id),
    ];
    for (batch, id) in cases {
        for expected in [
            ExpectedRevision::Any,
            ExpectedRevision::Exact(4),
            ExpectedRevision::NoStream,
        ] {
            assert_duplicate(store.append(&s, expected, batch.clone()).await, &s, id);
        }
    }
    assert_eq!(store.all_events().await, before, "nothing written");
    // The fresh event alone is new.
    let r = store
        .append(&s, ExpectedRevision::Exact(4), fresh)
        .await
        .expect("a batch of new ids");
    assert_eq!(
        (r.first_revision, r.idempotent_replay),
        (Revision(5), false)
    );
}

/// An id appended to one stream is refused on another (its whole batch too), and an id given
/// twice in one batch is refused, seen before or not; nothing is written.
pub async fn an_id_seen_in_another_stream_or_twice_in_a_batch_is_refused<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    let (a, b) = (stream("idem-5a"), stream("idem-5b"));
    let batch = evs("a", 2);
    store
        .append(&a, ExpectedRevision::NoStream, batch.clone())
        .await
        .expect("append");
    let before = store.all_events().await;
    assert_duplicate(
        store.append(&b, ExpectedRevision::Any, batch.clone()).await,
        &b,
        batch[0].id,
    );
    assert_duplicate(
        store
            .append(&b, ExpectedRevision::NoStream, vec![batch[1].clone()])
            .await,
        &b,
        batch[1].id,
    );
    let twice = evs("t", 1).remove(0);
    let mut doubled = evs("u", 1);
    doubled.extend([twice.clone(), twice.clone()]);
    assert_duplicate(
        store.append(&b, ExpectedRevision::Any, doubled).await,
        &b,
        twice.id,
    );
    assert_eq!(store.all_events().await, before, "nothing written");
    assert!(
        matches!(
            store.stream_info(&b).await,
            Err(StoreError::StreamNotFound { .. })
        ),
        "the other stream was never created"
    );
    assert_eq!(ids_of(store, &a).await, ids(&batch));
}

/// Retries racing their original (the same batch sent by several tasks at once, while other
/// appends to the stream race too): exactly one of them writes, every other answers a replay of
/// it with its positions, and the stream holds the batch once.
pub async fn racing_retries_write_once<S: EventStore>(store: &Arc<S>, _: Limits) {
    const COPIES: usize = 6;
    const OTHERS: usize = 4;
    const ROUNDS: usize = 5;
    let s = stream("idem-6");
    let mut want_ids = Vec::new();
    for round in 0..ROUNDS {
        let batch = evs("r", 1 + (round % 3) as u64);
        let barrier = Arc::new(Barrier::new(COPIES + OTHERS));
        let copies: Vec<_> = (0..COPIES)
            .map(|_| {
                let (store, s, barrier, batch) = (
                    Arc::clone(store),
                    s.clone(),
                    Arc::clone(&barrier),
                    batch.clone(),
                );
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.append(&s, ExpectedRevision::Any, batch).await
                })
            })
            .collect();
        let others: Vec<_> = (0..OTHERS)
            .map(|_| {
                let (store, s, barrier) = (Arc::clone(store), s.clone(), Arc::clone(&barrier));
                let other = evs("o", 1);
                let id = other[0].id;
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .append(&s, ExpectedRevision::Any, other)
                        .await
                        .map(|_| id)
                })
            })
            .collect();
        let mut results = Vec::new();
        for c in copies {
            results.push(c.await.expect("a copy's task").expect("append of a copy"));
        }
        for o in others {
            want_ids.push(o.await.expect("another task").expect("another append"));
        }
        let written: Vec<&AppendResult> = results.iter().filter(|r| !r.idempotent_replay).collect();
        assert_eq!(
            written.len(),
            1,
            "round {round}: exactly one copy writes: {results:?}"
        );
        for r in &results {
            assert_eq!(where_written(r), where_written(written[0]), "round {round}");
        }
        want_ids.extend(ids(&batch));
    }
    let mut got = ids_of(store, &s).await;
    assert_eq!(got.len(), want_ids.len(), "every batch once: {got:?}");
    got.sort();
    want_ids.sort();
    assert_eq!(got, want_ids);
}

// ----- Cases with a window of their own -----

/// The window of [`a_retry_beyond_the_window_is_appended_again`]: eight positions, no age.
pub const SMALL_WINDOW: IdempotencyWindow = IdempotencyWindow {
    events: 8,
    max_age: None,
};

/// The window of [`a_retry_older_than_the_window_is_appended_again`]: one second.
pub const YOUNG_WINDOW: IdempotencyWindow = IdempotencyWindow {
    events: 1_000,
    max_age: Some(Duration::from_secs(1)),
};

/// With a window of eight positions: a retry is recognized while its batch lies wholly in the
/// newest eight positions of the log (whatever streams took the others); once it does not, the
/// same ids are a new append (not a replay, not refused), except a repeat of the stream's most
/// recent batch, which is recognized beyond the window too.
pub async fn a_retry_beyond_the_window_is_appended_again<S, F, Fut, G>(open: F)
where
    S: EventStore,
    F: FnOnce(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (S, G)>,
{
    let (store, _guard) = open(SMALL_WINDOW).await;
    let store = Arc::new(store);
    let (s, t, u) = (stream("win-1"), stream("win-1t"), stream("win-1u"));
    let early = evs("a", 2); // positions 0, 1
    let first = store
        .append(&s, ExpectedRevision::NoStream, early.clone())
        .await
        .expect("append");
    let last_of_t = evs("t", 1); // position 2
    let t_first = store
        .append(&t, ExpectedRevision::NoStream, last_of_t.clone())
        .await
        .expect("append");
    let middle = evs("b", 3); // positions 3..5
    store
        .append(&s, ExpectedRevision::Any, middle.clone())
        .await
        .expect("append");
    // Next position 6: everything is inside.
    let again = store
        .append(&s, ExpectedRevision::Any, early.clone())
        .await
        .expect("a retry inside the window");
    assert!(again.idempotent_replay, "{again:?}");
    assert_eq!(where_written(&again), where_written(&first));
    store
        .append(&u, ExpectedRevision::Any, evs("c", 3)) // positions 6..8
        .await
        .expect("append");
    // Next position 9: positions 1.. are inside; `early` began at 0, so it left, whole.
    let r = store
        .append(&s, ExpectedRevision::Exact(4), early.clone())
        .await
        .expect("a retry beyond the window is a new append");
    assert!(!r.idempotent_replay, "{r:?}");
    assert_eq!(
        (r.first_revision, r.last_revision),
        (Revision(5), Revision(6))
    );
    // `t`'s batch is outside now (position 2, next 11), but it is `t`'s last: recognized.
    let again = store
        .append(&t, ExpectedRevision::NoStream, last_of_t.clone())
        .await
        .expect("the stream's last batch beyond the window");
    assert!(again.idempotent_replay, "{again:?}");
    assert_eq!(where_written(&again), where_written(&t_first));
    // `middle` (3..5) is inside until the next position passes 11; a part of it is refused...
    assert_duplicate(
        store
            .append(&s, ExpectedRevision::Any, vec![middle[1].clone()])
            .await,
        &s,
        middle[1].id,
    );
    store
        .append(&u, ExpectedRevision::Any, evs("d", 1)) // position 11
        .await
        .expect("append");
    // ...and new once it left (next 12: positions 4.. are inside).
    let r = store
        .append(&s, ExpectedRevision::Exact(6), vec![middle[1].clone()])
        .await
        .expect("an id of a batch that left the window is new");
    assert!(!r.idempotent_replay, "{r:?}");
    assert_eq!(r.first_revision, Revision(7));
    let mut want = ids(&early);
    want.extend(ids(&middle));
    want.extend(ids(&early));
    want.push(middle[1].id);
    assert_eq!(ids_of(&store, &s).await, want);
}

/// With a window of one second: a retry of a batch (not the stream's last) committed more than
/// a second ago is a new append.
pub async fn a_retry_older_than_the_window_is_appended_again<S, F, Fut, G>(open: F)
where
    S: EventStore,
    F: FnOnce(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (S, G)>,
{
    let (store, _guard) = open(YOUNG_WINDOW).await;
    let store = Arc::new(store);
    let s = stream("win-2");
    let old = evs("a", 2);
    store
        .append(&s, ExpectedRevision::NoStream, old.clone())
        .await
        .expect("append");
    store
        .append(&s, ExpectedRevision::Exact(1), evs("b", 1))
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let r = store
        .append(&s, ExpectedRevision::Exact(2), old.clone())
        .await
        .expect("a retry of a batch older than the window is a new append");
    assert!(!r.idempotent_replay, "{r:?}");
    assert_eq!(
        (r.first_revision, r.last_revision),
        (Revision(3), Revision(4))
    );
    // ...and that new append is inside the window: its retry replays.
    let again = store
        .append(&s, ExpectedRevision::Any, old)
        .await
        .expect("retry");
    assert!(again.idempotent_replay, "{again:?}");
    assert_eq!(again.first_revision, Revision(3));
}
