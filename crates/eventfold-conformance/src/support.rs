//! Small helpers that keep each case a few readable lines.

use std::fmt::Debug;
use std::time::Duration;

use eventfold_core::{
    ContentType, EventStore, EventSubscription, EventType, ExpectedRevision, LimitKind, NewEvent,
    Position, ReadAll, ReadFrom, ReadStream, RecordedEvent, Revision, StoreError, StoreResult,
    StreamName,
};
use futures::StreamExt as _;

/// How long a subscription may stay silent before the case fails instead of hanging.
pub(crate) const SUBSCRIPTION_WAIT: Duration = Duration::from_secs(10);

/// A stream name the case chose (always valid).
pub(crate) fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("the case's stream names are valid")
}

/// An event type the case chose (always valid).
pub(crate) fn ty(name: &str) -> EventType {
    EventType::new(name).expect("the case's event types are valid")
}

/// A JSON event of type `t` with data `{"n": n}` and a fresh id.
pub(crate) fn ev(t: &str, n: u64) -> NewEvent {
    NewEvent::json(ty(t), &serde_json::json!({ "n": n }))
}

/// `count` JSON events of type `t`, numbered from 0.
pub(crate) fn evs(t: &str, count: u64) -> Vec<NewEvent> {
    (0..count).map(|n| ev(t, n)).collect()
}

/// An `application/octet-stream` event with `len` bytes of data.
pub(crate) fn blob(len: usize) -> NewEvent {
    NewEvent::bytes(
        ty("blob"),
        ContentType::new("application/octet-stream").expect("a valid media type"),
        (0..len).map(|i| (i % 251) as u8).collect(),
    )
}

/// The revisions of `events`, in order.
pub(crate) fn revs(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.revision.0).collect()
}

/// The positions of `events`, in order.
pub(crate) fn positions(events: &[RecordedEvent]) -> Vec<Position> {
    events.iter().map(|e| e.position).collect()
}

/// Asserts `r` is `WrongExpectedRevision` for `stream` with these `expected` and `actual`.
#[track_caller]
pub(crate) fn assert_wrong<T: Debug>(
    r: StoreResult<T>,
    stream: &StreamName,
    expected: ExpectedRevision,
    actual: Option<u64>,
) {
    match r {
        Err(StoreError::WrongExpectedRevision {
            stream: s,
            expected: e,
            actual: a,
        }) => assert_eq!(
            (s, e, a),
            (stream.clone(), expected, actual.map(Revision)),
            "WrongExpectedRevision {{ stream, expected, actual }}"
        ),
        other => panic!(
            "expected WrongExpectedRevision {{ stream: {stream}, expected: {expected}, actual: {actual:?} }}, got {other:?}"
        ),
    }
}

/// Asserts `r` is `StreamNotFound` for `stream`.
#[track_caller]
pub(crate) fn assert_not_found<T: Debug>(r: StoreResult<T>, stream: &StreamName) {
    match r {
        Err(StoreError::StreamNotFound { stream: s }) => assert_eq!(&s, stream),
        other => panic!("expected StreamNotFound {{ stream: {stream} }}, got {other:?}"),
    }
}

/// Asserts `r` is `StreamDeleted` for `stream`.
#[track_caller]
pub(crate) fn assert_deleted<T: Debug>(r: StoreResult<T>, stream: &StreamName) {
    match r {
        Err(StoreError::StreamDeleted { stream: s }) => assert_eq!(&s, stream),
        other => panic!("expected StreamDeleted {{ stream: {stream} }}, got {other:?}"),
    }
}

/// Asserts `r` is `LimitExceeded` for `limit` with this `max`; `actual` is checked when given,
/// otherwise it must exceed `max`.
#[track_caller]
pub(crate) fn assert_limit<T: Debug>(
    r: StoreResult<T>,
    limit: LimitKind,
    max: usize,
    actual: Option<usize>,
) {
    match r {
        Err(StoreError::LimitExceeded {
            limit: l,
            max: m,
            actual: a,
        }) => {
            assert_eq!(
                (l, m),
                (limit, max as u64),
                "LimitExceeded {{ limit, max }}"
            );
            match actual {
                Some(want) => assert_eq!(a, want as u64, "LimitExceeded {{ actual }}"),
                None => assert!(a > m, "LimitExceeded {{ actual: {a} }} must exceed max {m}"),
            }
        }
        other => panic!("expected LimitExceeded {{ limit: {limit:?}, max: {max} }}, got {other:?}"),
    }
}

/// Reads that the cases repeat, available on every store (and on `Arc`s of one).
pub(crate) trait StoreExt: EventStore {
    /// One page of `stream`: its revisions and `next`.
    async fn page(&self, stream: &StreamName, read: ReadStream) -> (Vec<u64>, Option<u64>) {
        let slice = self
            .read_stream(stream, read)
            .await
            .unwrap_or_else(|e| panic!("read stream {stream} with {read:?}: {e}"));
        (revs(&slice.events), slice.next.map(|r| r.0))
    }

    /// Every visible event of `stream`, forward, following `next`.
    async fn stream_events(&self, stream: &StreamName) -> Vec<RecordedEvent> {
        let mut out = Vec::new();
        let mut read = ReadStream::forward(500);
        loop {
            let slice = self
                .read_stream(stream, read)
                .await
                .unwrap_or_else(|e| panic!("read stream {stream}: {e}"));
            out.extend(slice.events);
            match slice.next {
                Some(n) => read = read.from(ReadFrom::At(n)),
                None => return out,
            }
        }
    }

    /// The revisions of every visible event of `stream`, forward.
    async fn stream_revs(&self, stream: &StreamName) -> Vec<u64> {
        revs(&self.stream_events(stream).await)
    }

    /// Every event of `$all`, forward, following `next`.
    async fn all_events(&self) -> Vec<RecordedEvent> {
        let mut out = Vec::new();
        let mut read = ReadAll::forward(500);
        loop {
            let page = self.read_all(read.clone()).await.expect("read $all");
            out.extend(page.events);
            match page.next {
                Some(p) => read = read.from(ReadFrom::At(p)),
                None => return out,
            }
        }
    }
}

impl<S: EventStore + ?Sized> StoreExt for S {}

/// The next event of a subscription, failing the case after [`SUBSCRIPTION_WAIT`] instead of
/// hanging.
pub(crate) async fn next(sub: &mut EventSubscription) -> RecordedEvent {
    match tokio::time::timeout(SUBSCRIPTION_WAIT, sub.next()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("the subscription failed: {e}"),
        Ok(None) => panic!("the subscription ended"),
        Err(_) => panic!("no event within {SUBSCRIPTION_WAIT:?}"),
    }
}

/// The next `n` events of a subscription.
pub(crate) async fn take(sub: &mut EventSubscription, n: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(next(sub).await);
    }
    out
}

/// Asserts that no event arrives within `ms` milliseconds.
pub(crate) async fn nothing_within(sub: &mut EventSubscription, ms: u64) {
    if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(ms), sub.next()).await {
        panic!("expected no further event, got {r:?}");
    }
}
