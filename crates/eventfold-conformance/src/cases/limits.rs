//! Size limits, as configured for the store under test: each exceeded one is refused with the
//! limit named, and nothing is written.

use std::sync::Arc;

use eventfold_core::{
    EventStore, ExpectedRevision, LimitKind, Limits, Metadata, ReadAll, ReadStream,
};

use crate::support::{StoreExt as _, assert_limit, assert_not_found, blob, evs, stream};

/// One event more than `batch_events_max` is refused; exactly `batch_events_max` is accepted.
pub async fn batch_event_limit<S: EventStore>(store: &Arc<S>, limits: Limits) {
    let s = stream("limit-1");
    let max = limits.batch_events_max;
    assert_limit(
        store
            .append(&s, ExpectedRevision::Any, evs("a", max as u64 + 1))
            .await,
        LimitKind::BatchEvents,
        max,
        Some(max + 1),
    );
    assert_not_found(store.read_stream(&s, ReadStream::forward(10)).await, &s);
    assert!(store.all_events().await.is_empty(), "nothing written");
    let r = store
        .append(&s, ExpectedRevision::NoStream, evs("a", max as u64))
        .await
        .expect("a batch of exactly batch_events_max events");
    assert_eq!((r.first_revision.0, r.last_revision.0), (0, max as u64 - 1));
}

/// One event of more than `event_bytes_max` (data plus metadata) is refused; one of exactly
/// `event_bytes_max` is accepted and read back whole.
pub async fn event_size_limit<S: EventStore>(store: &Arc<S>, limits: Limits) {
    let s = stream("limit-2");
    let max = limits.event_bytes_max;
    assert_limit(
        store
            .append(&s, ExpectedRevision::Any, vec![blob(max + 1)])
            .await,
        LimitKind::EventBytes,
        max,
        Some(max + 1),
    );
    // The metadata counts too.
    let mut md = Metadata::new();
    md.insert("pad".into(), "x".repeat(64).into());
    let with_md = blob(max.saturating_sub(32)).with_metadata(md);
    assert!(with_md.size_bytes() > max);
    assert_limit(
        store.append(&s, ExpectedRevision::Any, vec![with_md]).await,
        LimitKind::EventBytes,
        max,
        None,
    );
    // In a batch, one large event fails the whole batch.
    assert_limit(
        store
            .append(
                &s,
                ExpectedRevision::Any,
                vec![blob(10), blob(max + 1), blob(10)],
            )
            .await,
        LimitKind::EventBytes,
        max,
        Some(max + 1),
    );
    assert_not_found(store.read_stream(&s, ReadStream::forward(10)).await, &s);
    let at = blob(max);
    store
        .append(&s, ExpectedRevision::NoStream, vec![at.clone()])
        .await
        .expect("an event of exactly event_bytes_max bytes");
    let read = store
        .read_stream(&s, ReadStream::forward(1))
        .await
        .expect("read");
    assert_eq!(read.events.len(), 1);
    assert!(read.events[0].data == at.data, "the data comes back whole");
}

/// A batch of more than `batch_bytes_max` bytes is refused, even when each event is within
/// `event_bytes_max`. Skipped when the store's limits make such a batch impossible.
pub async fn batch_bytes_limit<S: EventStore>(store: &Arc<S>, limits: Limits) {
    let s = stream("limit-3");
    let each = limits.event_bytes_max.min(limits.batch_bytes_max);
    let count = limits.batch_bytes_max / each + 1;
    if count > limits.batch_events_max {
        return;
    }
    let batch: Vec<_> = (0..count).map(|_| blob(each)).collect();
    assert_limit(
        store.append(&s, ExpectedRevision::Any, batch).await,
        LimitKind::BatchBytes,
        limits.batch_bytes_max,
        Some(count * each),
    );
    assert_not_found(store.read_stream(&s, ReadStream::forward(10)).await, &s);
    let fits = limits.batch_bytes_max / each;
    let r = store
        .append(
            &s,
            ExpectedRevision::NoStream,
            (0..fits).map(|_| blob(each)).collect(),
        )
        .await
        .expect("a batch within batch_bytes_max");
    assert_eq!(r.last_revision.0, fits as u64 - 1);
}

/// A read asking for more than `read_limit_max` events is refused (stream and `$all`); exactly
/// `read_limit_max` is accepted.
pub async fn read_limit<S: EventStore>(store: &Arc<S>, limits: Limits) {
    let s = stream("limit-4");
    store
        .append(&s, ExpectedRevision::Any, evs("a", 3))
        .await
        .expect("append");
    let max = limits.read_limit_max;
    for read in [ReadStream::forward(max + 1), ReadStream::backward(max + 1)] {
        assert_limit(
            store.read_stream(&s, read).await,
            LimitKind::ReadLimit,
            max,
            Some(max + 1),
        );
    }
    for read in [ReadAll::forward(max + 1), ReadAll::backward(max + 1)] {
        assert_limit(
            store.read_all(read).await,
            LimitKind::ReadLimit,
            max,
            Some(max + 1),
        );
    }
    let r = store
        .read_stream(&s, ReadStream::forward(max))
        .await
        .expect("a read of exactly read_limit_max");
    assert_eq!(r.events.len(), 3);
    let r = store
        .read_all(ReadAll::forward(max))
        .await
        .expect("a read of $all of exactly read_limit_max");
    assert_eq!(r.events.len(), 3);
}
