//! Reads as of a point in time (`until`): a stream or `$all` as it was then. The events get
//! their commit times from an import (`append_imported`); a store that cannot import passes
//! (the case says so and stops).

use std::sync::Arc;

use eventfold_core::{
    EventFilter, EventStore, ExpectedRevision, ImportBatch, Limits, Position, ReadAll, ReadFrom,
    ReadStream, RecordedEvent, Revision, StoreError, StreamName, Timestamp,
};

use crate::support::{ev, stream};

/// `(stream, revision)` of each event, in the order read.
fn ids(events: &[RecordedEvent]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| (e.stream.as_str().to_owned(), e.revision.0))
        .collect()
}

fn want(ids: &[(&str, u64)]) -> Vec<(String, u64)> {
    ids.iter().map(|(s, r)| ((*s).to_owned(), *r)).collect()
}

/// Reads `$all` page by page (`limit` events each) from `read`'s start until `next` is `None`.
async fn page_all<S: EventStore>(store: &S, read: ReadAll, limit: usize) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut read = ReadAll { limit, ..read };
    for _ in 0..100 {
        let slice = store.read_all(read.clone()).await.expect("read $all");
        assert!(slice.events.len() <= limit);
        out.extend(ids(&slice.events));
        match slice.next {
            Some(p) => read.from = ReadFrom::At(p),
            None => return out,
        }
    }
    panic!("paging {read:?} did not end: {out:?}");
}

/// Reads a stream page by page (`limit` events each) from `read`'s start until `next` is `None`.
async fn page_stream<S: EventStore>(
    store: &S,
    s: &StreamName,
    read: ReadStream,
    limit: usize,
) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut read = ReadStream { limit, ..read };
    for _ in 0..100 {
        let slice = store.read_stream(s, read).await.expect("read a stream");
        out.extend(ids(&slice.events));
        match slice.next {
            Some(r) => read.from = ReadFrom::At(r),
            None => return out,
        }
    }
    panic!("paging {read:?} did not end: {out:?}");
}

/// `until` keeps the events committed at or before it (a tie included): a forward read ends
/// (`next: None`) at the first later one, a backward read from the end starts at the last one
/// at or before it, and paging by `next` in either direction gives the same events; on a stream
/// and on `$all`, filtered or not.
pub async fn reads_until_a_time<S: EventStore>(store: &Arc<S>, _: Limits) {
    let (a, b) = (stream("until_a-1"), stream("until_b-1"));
    let base = Timestamp::now().micros() - 3_600_000_000;
    let t = |i: i64| Timestamp(base + i * 1_000_000);
    // The log: a0@t0 a1@t1 b0@t1 b1@t2 a2@t3 b2@t4.
    let imports = [
        (&a, 0, vec![(ev("x", 0), t(0)), (ev("x", 1), t(1))]),
        (&b, 0, vec![(ev("y", 0), t(1)), (ev("y", 1), t(2))]),
        (&a, 2, vec![(ev("x", 2), t(3))]),
        (&b, 2, vec![(ev("y", 2), t(4))]),
    ];
    for (s, first, events) in imports {
        let r = store
            .append_imported(
                s,
                ExpectedRevision::Any,
                ImportBatch {
                    first_revision: Revision(first),
                    events,
                },
            )
            .await;
        if let Err(e @ StoreError::Unsupported { .. }) = &r {
            eprintln!("reads_until_a_time: skipped, the store cannot import: {e}");
            return;
        }
        r.expect("import");
    }

    // A stream.
    let read = |r: ReadStream, until: i64| r.until(t(until));
    let s = store
        .read_stream(&a, read(ReadStream::forward(10), 1))
        .await
        .expect("read");
    assert_eq!(ids(&s.events), want(&[("until_a-1", 0), ("until_a-1", 1)]));
    assert_eq!(s.next, None, "nothing further as of t1");
    let s = store
        .read_stream(&a, read(ReadStream::backward(10), 2))
        .await
        .expect("read");
    assert_eq!(
        ids(&s.events),
        want(&[("until_a-1", 1), ("until_a-1", 0)]),
        "a backward read from the end starts at the last event at or before `until`"
    );
    assert_eq!(s.next, None);
    let s = store
        .read_stream(&a, read(ReadStream::backward(1), 2))
        .await
        .expect("read");
    assert_eq!(ids(&s.events), want(&[("until_a-1", 1)]));
    assert_eq!(s.next, Some(Revision(0)));
    assert_eq!(
        page_stream(&**store, &a, read(ReadStream::forward(1), 2), 1).await,
        want(&[("until_a-1", 0), ("until_a-1", 1)])
    );
    assert_eq!(
        page_stream(&**store, &a, read(ReadStream::backward(1), 3), 1).await,
        want(&[("until_a-1", 2), ("until_a-1", 1), ("until_a-1", 0)])
    );
    let s = store
        .read_stream(
            &a,
            read(ReadStream::forward(10).from(ReadFrom::At(Revision(2))), 2),
        )
        .await
        .expect("read");
    assert_eq!((s.events.len(), s.next), (0, None), "revision 2 is later");
    for r in [ReadStream::forward(10), ReadStream::backward(10)] {
        let s = store
            .read_stream(&a, r.until(Timestamp(base - 1)))
            .await
            .expect("a stream read before its first event is empty, not an error");
        assert_eq!((s.events.len(), s.next), (0, None));
        let s = store.read_stream(&a, read(r, 9)).await.expect("read");
        assert_eq!(s.events.len(), 3, "until after the last event: all of it");
    }

    // `$all`.
    let all = |r: ReadAll, until: i64| r.until(t(until));
    let s = store
        .read_all(all(ReadAll::forward(100), 1))
        .await
        .expect("read $all");
    assert_eq!(
        ids(&s.events),
        want(&[("until_a-1", 0), ("until_a-1", 1), ("until_b-1", 0)]),
        "a tie with `until` is included"
    );
    assert_eq!(s.next, None, "a forward read ends at the first later event");
    let s = store
        .read_all(all(ReadAll::backward(100), 2))
        .await
        .expect("read $all");
    let upto_t2 = want(&[
        ("until_b-1", 1),
        ("until_b-1", 0),
        ("until_a-1", 1),
        ("until_a-1", 0),
    ]);
    assert_eq!(ids(&s.events), upto_t2);
    assert_eq!(s.next, None);
    assert_eq!(
        page_all(&**store, all(ReadAll::backward(1), 2), 1).await,
        upto_t2
    );
    let mut forward = upto_t2.clone();
    forward.reverse();
    assert_eq!(
        page_all(&**store, all(ReadAll::forward(1), 2), 1).await,
        forward
    );
    let s = store
        .read_all(all(ReadAll::forward(2), 2))
        .await
        .expect("read $all");
    assert_eq!(s.events.len(), 2);
    assert!(
        matches!(s.next, Some(Position(_))),
        "more at or before `until`: {:?}",
        s.next
    );
    let only_b = EventFilter {
        stream_prefix: Some("until_b".into()),
        ..EventFilter::default()
    };
    let s = store
        .read_all(all(ReadAll::forward(100).filter(only_b.clone()), 2))
        .await
        .expect("read $all");
    assert_eq!(ids(&s.events), want(&[("until_b-1", 0), ("until_b-1", 1)]));
    assert_eq!(s.next, None);
    let s = store
        .read_all(all(ReadAll::backward(100).filter(only_b), 3))
        .await
        .expect("read $all");
    assert_eq!(ids(&s.events), want(&[("until_b-1", 1), ("until_b-1", 0)]));
    for r in [ReadAll::forward(100), ReadAll::backward(100)] {
        let s = store
            .read_all(r.clone().until(Timestamp(base - 1)))
            .await
            .expect("read $all");
        assert_eq!((s.events.len(), s.next), (0, None), "{r:?}");
        let s = store.read_all(all(r, 9)).await.expect("read $all");
        assert_eq!(s.events.len(), 6, "until after the last event: all of it");
    }
}
