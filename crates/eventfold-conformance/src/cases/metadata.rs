//! Stream metadata and its retention rules: hidden events leave reads of the stream and of
//! `$all`, and the revisions of the rest do not change.

use std::sync::Arc;

use eventfold_core::{
    EventStore, ExpectedRevision, Limits, ReadFrom, ReadStream, Revision, StreamMetadata,
};

use crate::support::{StoreExt as _, evs, stream};

fn rule(max_count: Option<u64>, truncate_before: Option<u64>) -> StreamMetadata {
    StreamMetadata {
        max_count,
        truncate_before: truncate_before.map(Revision),
        ..StreamMetadata::default()
    }
}

/// The metadata is the default (everything `None`) until set, on a missing stream and on an
/// existing one; set replaces it whole and get returns it as set, custom data included.
pub async fn metadata_default_and_round_trip<S: EventStore>(store: &Arc<S>, _: Limits) {
    let missing = stream("meta-0");
    assert_eq!(
        store
            .get_metadata(&missing)
            .await
            .expect("get on a missing stream"),
        StreamMetadata::default()
    );
    let s = stream("meta-1");
    store
        .append(&s, ExpectedRevision::Any, evs("a", 1))
        .await
        .expect("append");
    assert_eq!(
        store.get_metadata(&s).await.expect("get on a new stream"),
        StreamMetadata::default()
    );
    let mut custom = serde_json::Map::new();
    custom.insert("owner".into(), "billing".into());
    custom.insert(
        "nested".into(),
        serde_json::json!({"tags": ["a", "b"], "n": 3, "ok": true}),
    );
    let md = StreamMetadata {
        max_count: Some(100),
        max_age_seconds: Some(86_400),
        truncate_before: Some(Revision(0)),
        custom: Some(custom.clone()),
    };
    store.set_metadata(&s, md.clone()).await.expect("set");
    assert_eq!(store.get_metadata(&s).await.expect("get"), md);
    assert_eq!(store.stream_info(&s).await.expect("info").metadata, md);
    let only_custom = StreamMetadata {
        custom: Some(custom),
        ..StreamMetadata::default()
    };
    store
        .set_metadata(&s, only_custom.clone())
        .await
        .expect("replace");
    assert_eq!(
        store.get_metadata(&s).await.expect("get"),
        only_custom,
        "set replaces the whole metadata"
    );
    store
        .set_metadata(&s, StreamMetadata::default())
        .await
        .expect("clear");
    assert_eq!(
        store.get_metadata(&s).await.expect("get"),
        StreamMetadata::default()
    );
    // Metadata set on a stream before its first event is kept.
    let early = stream("meta-2");
    store
        .set_metadata(&early, rule(Some(2), None))
        .await
        .expect("set on a missing stream");
    assert_eq!(
        store.get_metadata(&early).await.expect("get"),
        rule(Some(2), None)
    );
    store
        .append(&early, ExpectedRevision::Any, evs("a", 3))
        .await
        .expect("append");
    assert_eq!(store.stream_revs(&early).await, [1, 2]);
}

/// `max_count` keeps only the last events visible; revisions do not change; `next`, `$all` and
/// `event_count` follow.
pub async fn max_count_hides_older_events<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("maxcount-1");
    store
        .append(&s, ExpectedRevision::Any, evs("a", 5))
        .await
        .expect("append");
    store
        .append(
            &stream("maxcount-other"),
            ExpectedRevision::Any,
            evs("a", 1),
        )
        .await
        .expect("append");
    store
        .set_metadata(&s, rule(Some(2), None))
        .await
        .expect("set");
    assert_eq!(
        store.page(&s, ReadStream::forward(10)).await,
        (vec![3, 4], None)
    );
    assert_eq!(
        store.page(&s, ReadStream::forward(1)).await,
        (vec![3], Some(4))
    );
    assert_eq!(
        store.page(&s, ReadStream::backward(10)).await,
        (vec![4, 3], None)
    );
    assert_eq!(
        store.page(&s, ReadStream::backward(2)).await,
        (vec![4, 3], None)
    );
    assert_eq!(
        store
            .page(&s, ReadStream::forward(10).from(ReadFrom::At(Revision(1))))
            .await,
        (vec![3, 4], None),
        "a read from a hidden revision starts at the first visible one"
    );
    let all: Vec<(String, u64)> = store
        .all_events()
        .await
        .iter()
        .map(|e| (e.stream.to_string(), e.revision.0))
        .collect();
    assert_eq!(
        all,
        [
            ("maxcount-1".to_owned(), 3),
            ("maxcount-1".to_owned(), 4),
            ("maxcount-other".to_owned(), 0)
        ]
    );
    let info = store.stream_info(&s).await.expect("info");
    assert_eq!((info.last_revision, info.event_count), (Revision(4), 2));
    store
        .append(&s, ExpectedRevision::Exact(4), evs("a", 1))
        .await
        .expect("revisions go on");
    assert_eq!(store.stream_revs(&s).await, [4, 5]);
    store
        .set_metadata(&s, rule(Some(100), None))
        .await
        .expect("set a larger max_count");
    assert_eq!(
        store.stream_info(&s).await.expect("info").last_revision,
        Revision(5)
    );
}

/// `truncate_before` hides the revisions below it; combined with `max_count`, both apply.
pub async fn truncate_before_hides_events<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("truncate-1");
    store
        .append(&s, ExpectedRevision::Any, evs("a", 6))
        .await
        .expect("append");
    store
        .set_metadata(&s, rule(None, Some(3)))
        .await
        .expect("set");
    assert_eq!(
        store.page(&s, ReadStream::forward(10)).await,
        (vec![3, 4, 5], None)
    );
    assert_eq!(
        store
            .page(&s, ReadStream::forward(10).from(ReadFrom::At(Revision(1))))
            .await,
        (vec![3, 4, 5], None)
    );
    assert_eq!(
        store.page(&s, ReadStream::backward(10)).await,
        (vec![5, 4, 3], None)
    );
    assert_eq!(
        store.page(&s, ReadStream::backward(3)).await,
        (vec![5, 4, 3], None)
    );
    assert_eq!(store.all_events().await.len(), 3);
    let info = store.stream_info(&s).await.expect("info");
    assert_eq!((info.last_revision, info.event_count), (Revision(5), 3));
    store
        .set_metadata(&s, rule(Some(1), Some(3)))
        .await
        .expect("set both");
    assert_eq!(
        store.stream_revs(&s).await,
        [5],
        "max_count is the stricter"
    );
    store
        .set_metadata(&s, rule(Some(4), Some(4)))
        .await
        .expect("set both");
    assert_eq!(
        store.stream_revs(&s).await,
        [4, 5],
        "truncate_before is the stricter"
    );
    // Hiding everything leaves an existing stream with nothing to read.
    store
        .set_metadata(&s, rule(None, Some(99)))
        .await
        .expect("set");
    assert_eq!(
        store.page(&s, ReadStream::forward(10)).await,
        (vec![], None)
    );
    assert!(store.all_events().await.is_empty());
    let info = store
        .stream_info(&s)
        .await
        .expect("info of a fully truncated stream");
    assert_eq!((info.last_revision, info.event_count), (Revision(5), 0));
    store
        .append(&s, ExpectedRevision::Exact(5), evs("a", 1))
        .await
        .expect("append to a fully truncated stream");
}

/// `max_age_seconds` hides only events older than that: young events stay visible.
pub async fn max_age_keeps_young_events<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("maxage-1");
    store
        .append(&s, ExpectedRevision::Any, evs("a", 3))
        .await
        .expect("append");
    store
        .set_metadata(
            &s,
            StreamMetadata {
                max_age_seconds: Some(3600),
                ..StreamMetadata::default()
            },
        )
        .await
        .expect("set");
    store
        .append(&s, ExpectedRevision::Any, evs("a", 1))
        .await
        .expect("append");
    assert_eq!(store.stream_revs(&s).await, [0, 1, 2, 3]);
    assert_eq!(
        store.page(&s, ReadStream::backward(10)).await,
        (vec![3, 2, 1, 0], None)
    );
    assert_eq!(store.all_events().await.len(), 4);
    assert_eq!(store.stream_info(&s).await.expect("info").event_count, 4);
}
