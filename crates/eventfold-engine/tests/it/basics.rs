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
