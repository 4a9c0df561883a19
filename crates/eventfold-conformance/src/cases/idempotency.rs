//! Idempotent retries: the stream's most recent batch, sent again, is answered with the first
//! result and writes nothing.

use std::sync::Arc;

use eventfold_core::{AppendResult, EventStore, ExpectedRevision, Limits, Revision};

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

/// Only the most recent batch is replayed: the ids of an older batch are appended again as new
/// events.
pub async fn only_the_most_recent_batch_is_a_replay<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("idem-3");
    let old = evs("a", 2);
    store
        .append(&s, ExpectedRevision::Any, old.clone())
        .await
        .expect("append");
    store
        .append(&s, ExpectedRevision::Any, evs("b", 1))
        .await
        .expect("append");
    let r = store
        .append(&s, ExpectedRevision::Any, old.clone())
        .await
        .expect("append of an older batch's ids");
    assert!(!r.idempotent_replay, "{r:?}");
    assert_eq!(
        (r.first_revision, r.last_revision),
        (Revision(3), Revision(4))
    );
    let read = store.stream_events(&s).await;
    assert_eq!(
        read.iter().map(|e| e.id).collect::<Vec<_>>(),
        [old[0].id, old[1].id, read[2].id, old[0].id, old[1].id]
    );
    // Being an older batch, it is checked against the expected revision like any append.
    assert_wrong(
        store
            .append(&s, ExpectedRevision::Exact(2), evs("c", 1))
            .await,
        &s,
        ExpectedRevision::Exact(2),
        Some(4),
    );
}

/// A batch that shares only some ids with the most recent one (a part of it, or more than it)
/// is not a replay: it is appended as new events, after the expected-revision check.
pub async fn partial_overlap_is_not_a_replay<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("idem-4");
    let last = evs("a", 2);
    store
        .append(&s, ExpectedRevision::NoStream, last.clone())
        .await
        .expect("append");
    assert_wrong(
        store
            .append(&s, ExpectedRevision::NoStream, vec![last[0].clone()])
            .await,
        &s,
        ExpectedRevision::NoStream,
        Some(1),
    );
    let part = store
        .append(&s, ExpectedRevision::Any, vec![last[1].clone()])
        .await
        .expect("append of a part of the last batch");
    assert!(!part.idempotent_replay, "{part:?}");
    assert_eq!(part.first_revision, Revision(2));
    let mut more = evs("b", 1);
    more.push(evs("c", 1).remove(0));
    store
        .append(&s, ExpectedRevision::Any, more.clone())
        .await
        .expect("append");
    let mut superset = more.clone();
    superset.extend(evs("d", 1));
    let r = store
        .append(&s, ExpectedRevision::Any, superset)
        .await
        .expect("append of the last batch plus one more event");
    assert!(!r.idempotent_replay, "{r:?}");
    assert_eq!(
        (r.first_revision, r.last_revision),
        (Revision(5), Revision(7))
    );
    assert_eq!(store.stream_revs(&s).await, (0..8).collect::<Vec<u64>>());
}
