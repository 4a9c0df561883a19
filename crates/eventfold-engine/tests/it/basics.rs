use eventfold_core::{EventStore, ExpectedRevision, ReadAll, ReadStream};

use crate::support::{event, open, stream};

#[tokio::test]
async fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = stream("order-1");
    {
        let e = open(dir.path());
        let r = e
            .append(
                &s,
                ExpectedRevision::NoStream,
                vec![event("a", 1), event("b", 2)],
            )
            .await
            .unwrap();
        assert_eq!((r.first_revision.0, r.last_revision.0), (0, 1));
        let r = e
            .append(&s, ExpectedRevision::Exact(1), vec![event("c", 3)])
            .await
            .unwrap();
        assert_eq!(r.first_position.0, 2);
        let slice = e.read_stream(&s, ReadStream::forward(10)).await.unwrap();
        assert_eq!(slice.events.len(), 3);
        e.shutdown();
    }
    let e = open(dir.path());
    let slice = e.read_stream(&s, ReadStream::forward(10)).await.unwrap();
    assert_eq!(
        slice
            .events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    let all = e.read_all(ReadAll::forward(10)).await.unwrap();
    assert_eq!(all.events.len(), 3);
    let back = e.read_all(ReadAll::backward(2)).await.unwrap();
    assert_eq!(
        back.events.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        [2, 1]
    );
    assert!(
        e.append(&s, ExpectedRevision::NoStream, vec![event("d", 4)])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn rolls_over_segments_and_reopens_from_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let total = 30_000u64;
    {
        let e = open(dir.path());
        for b in 0..(total / 500) {
            let evs = (0..500)
                .map(|i| crate::support::binary("blob", vec![(b + i) as u8; 300]))
                .collect();
            e.append(&stream(&format!("s-{}", b % 7)), ExpectedRevision::Any, evs)
                .await
                .unwrap();
        }
        assert!(e.stats().segments > 2, "{:?}", e.stats());
        e.shutdown();
    }
    let e = open(dir.path());
    assert_eq!(e.stats().events, total);
    let mut n = 0;
    let mut read = ReadAll::forward(1000);
    loop {
        let page = e.read_all(read.clone()).await.unwrap();
        for (i, ev) in page.events.iter().enumerate() {
            assert_eq!(ev.position.0, n + i as u64);
        }
        n += page.events.len() as u64;
        match page.next {
            Some(p) => read = read.from(eventfold_core::ReadFrom::At(p)),
            None => break,
        }
    }
    assert_eq!(n, total);
    let report = eventfold_engine::verify(dir.path());
    assert!(matches!(
        report,
        Err(eventfold_core::StoreError::Locked { .. })
    ));
    drop(e);
    let report = eventfold_engine::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.events, total);
}

/// A subscription reads pages bounded in bytes as well as events: over events of 100 KB
/// (a page holds a few of them) both `$all` and a stream subscription deliver every event,
/// in order, with no gap and no duplicate, history and live alike.
#[tokio::test]
async fn subscriptions_over_big_events_miss_nothing() {
    use eventfold_core::{EventFilter, Revision, SubscribeFrom};
    use futures::StreamExt as _;

    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let (a, b) = (stream("big-1"), stream("big-2"));
    let big = |n: u8| crate::support::binary("big", vec![n; 100_000]);
    // History: 24 events alternating between two streams, in batches of 3.
    for i in 0..8u8 {
        let s = if i % 2 == 0 { &a } else { &b };
        e.append(
            s,
            eventfold_core::ExpectedRevision::Any,
            vec![big(3 * i), big(3 * i + 1), big(3 * i + 2)],
        )
        .await
        .unwrap();
    }
    let mut all = e.subscribe_all(SubscribeFrom::Start, EventFilter::default());
    let mut one = e.subscribe_stream(&a, SubscribeFrom::At(Revision(0)));
    // Live: 6 more on `a`.
    e.append(
        &a,
        eventfold_core::ExpectedRevision::Any,
        (24..30).map(big).collect(),
    )
    .await
    .unwrap();
    for p in 0..30u64 {
        let ev = all.next().await.unwrap().unwrap();
        assert_eq!(ev.position.0, p, "$all in order, no gap");
        assert_eq!(ev.data, vec![p as u8; 100_000]);
    }
    let want: Vec<u8> = (0..30u8).filter(|n| n / 3 % 2 == 0 || *n >= 24).collect();
    for (r, n) in want.iter().enumerate() {
        let ev = one.next().await.unwrap().unwrap();
        assert_eq!(ev.revision.0, r as u64, "the stream in order, no gap");
        assert_eq!(ev.data[0], *n);
    }
}
