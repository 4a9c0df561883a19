//! Listing streams and what is known about one.

use std::sync::Arc;

use eventfold_core::{
    EventStore, ExpectedRevision, Limits, ListStreams, Revision, StreamList, StreamMetadata,
};

use crate::support::{evs, stream};

fn names(list: &StreamList) -> Vec<&str> {
    list.streams.iter().map(|s| s.as_str()).collect()
}

/// Names come in byte order (not locale order), filtered by prefix, after a name (exclusive),
/// at most `limit` of them, with `next` to continue or `None` at the end.
pub async fn list_streams_pages_in_order<S: EventStore>(store: &Arc<S>, _: Limits) {
    let written = [
        "b-2", "a-1", "b-1", "c-1", "b-3", "B-1", "é-1", "a-10", "a-2", "b-", "ba",
    ];
    for n in written {
        store
            .append(&stream(n), ExpectedRevision::Any, evs("a", 1))
            .await
            .expect("append");
    }
    let byte_order = [
        "B-1", "a-1", "a-10", "a-2", "b-", "b-1", "b-2", "b-3", "ba", "c-1", "é-1",
    ];
    let list = |prefix: Option<&str>, after: Option<&str>, limit: usize| {
        let list = ListStreams {
            prefix: prefix.map(str::to_owned),
            after: after.map(str::to_owned),
            limit,
        };
        async move {
            store
                .list_streams(list.clone())
                .await
                .unwrap_or_else(|e| panic!("list {list:?}: {e}"))
        }
    };
    let all = list(None, None, 100).await;
    assert_eq!((names(&all), all.next.clone()), (byte_order.to_vec(), None));
    let exact = list(None, None, byte_order.len()).await;
    assert_eq!(exact.next, None, "an exact fit ends");

    let p1 = list(Some("b-"), None, 2).await;
    assert_eq!(names(&p1), ["b-", "b-1"]);
    assert_eq!(p1.next.as_ref().map(|n| n.as_str()), Some("b-1"));
    let p2 = list(Some("b-"), Some("b-1"), 2).await;
    assert_eq!(
        (names(&p2), p2.next.as_ref().map(|n| n.as_str())),
        (vec!["b-2", "b-3"], None)
    );
    let between = list(None, Some("a-11"), 3).await;
    assert_eq!(
        names(&between),
        ["a-2", "b-", "b-1"],
        "after a name that does not exist"
    );
    assert!(list(Some("zzz"), None, 10).await.streams.is_empty());
    assert!(list(None, Some("é-1"), 10).await.streams.is_empty());

    // Pages of one, following `next`, visit every name once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..50 {
        let page = list(None, after.as_deref(), 1).await;
        assert!(page.streams.len() <= 1, "limit 1 gave {page:?}");
        seen.extend(page.streams.iter().map(|s| s.to_string()));
        match page.next {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, byte_order);
}

/// `stream_info` gives the last revision and position, the count of readable events and the
/// metadata.
pub async fn stream_info_fields<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("info-1");
    store
        .append(&s, ExpectedRevision::Any, evs("a", 2))
        .await
        .expect("append");
    let info = store.stream_info(&s).await.expect("info");
    assert_eq!(
        (
            info.stream.clone(),
            info.last_revision,
            info.event_count,
            info.metadata
        ),
        (s.clone(), Revision(1), 2, StreamMetadata::default())
    );
    let r = store
        .append(&s, ExpectedRevision::Any, evs("a", 3))
        .await
        .expect("append");
    store
        .append(&stream("info-2"), ExpectedRevision::Any, evs("a", 1))
        .await
        .expect("append to another stream");
    let md = StreamMetadata {
        max_age_seconds: Some(86_400),
        ..StreamMetadata::default()
    };
    store.set_metadata(&s, md.clone()).await.expect("set");
    let info = store.stream_info(&s).await.expect("info");
    assert_eq!(info.stream, s);
    assert_eq!(info.last_revision, Revision(4));
    assert_eq!(info.last_position, r.last_position);
    assert_eq!(info.event_count, 5);
    assert_eq!(info.metadata, md);
}
