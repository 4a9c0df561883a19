//! Subscriptions: history first, then live events, in order, with no gap and no duplicate at
//! the switch-over, even while appends race the catch-up.
//!
//! Each wait for an event is bounded (`support::SUBSCRIPTION_WAIT`), so a broken store fails the
//! case instead of hanging it. A subscription may start lazily (on its first poll), so a case
//! subscribing from the end polls it once before appending what it expects to receive.

use std::sync::Arc;

use eventfold_core::{
    EventFilter, EventStore, ExpectedRevision, Limits, Position, Revision, SubscribeFrom,
};
use futures::future::join_all;

use crate::support::{
    StoreExt as _, ev, evs, next, nothing_within, positions, revs, stream, take, ty,
};

/// Events the writer appends while subscriptions catch up in the no-gap cases.
const RACING_EVENTS: u64 = 2_000;

/// Appends `total` events in batches of 1 to 10, round-robin over `streams`, from a spawned
/// task; returns its handle.
fn spawn_writer<S: EventStore>(
    store: &Arc<S>,
    streams: Vec<eventfold_core::StreamName>,
    total: u64,
) -> tokio::task::JoinHandle<()> {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let mut written = 0;
        let mut i = 0usize;
        while written < total {
            let size = (1 + i as u64 % 10).min(total - written);
            let batch = (written..written + size).map(|n| ev("live", n)).collect();
            store
                .append(&streams[i % streams.len()], ExpectedRevision::Any, batch)
                .await
                .expect("the writer's append");
            written += size;
            i += 1;
        }
    })
}

/// A stream subscription from the start delivers the stream's history, then its live events,
/// and nothing of other streams.
pub async fn subscribe_stream_history_then_live<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("sub-1");
    let other = stream("sub-other");
    store
        .append(&s, ExpectedRevision::Any, evs("a", 3))
        .await
        .expect("append");
    store
        .append(&other, ExpectedRevision::Any, evs("a", 1))
        .await
        .expect("append");
    let mut sub = store.subscribe_stream(&s, SubscribeFrom::Start);
    let history = take(&mut sub, 3).await;
    assert_eq!(
        history,
        store.stream_events(&s).await,
        "the history, as read"
    );
    store
        .append(&other, ExpectedRevision::Any, evs("a", 1))
        .await
        .expect("append");
    let live = store
        .append(&s, ExpectedRevision::Any, evs("b", 2))
        .await
        .expect("append");
    let got = take(&mut sub, 2).await;
    assert_eq!(revs(&got), [3, 4]);
    assert_eq!(positions(&got), [live.first_position, live.last_position]);
    assert!(got.iter().all(|e| e.stream == s && e.event_type == ty("b")));
    nothing_within(&mut sub, 200).await;
}

/// From the end: only events appended afterwards. From a revision: that one (inclusive) and
/// the rest.
pub async fn subscribe_stream_from_end_and_revision<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("sub-2");
    store
        .append(&s, ExpectedRevision::Any, evs("a", 3))
        .await
        .expect("append");
    let mut from_end = store.subscribe_stream(&s, SubscribeFrom::End);
    let mut from_one = store.subscribe_stream(&s, SubscribeFrom::At(Revision(1)));
    assert_eq!(
        revs(&take(&mut from_one, 2).await),
        [1, 2],
        "from is inclusive"
    );
    nothing_within(&mut from_end, 200).await;
    store
        .append(&s, ExpectedRevision::Any, evs("b", 2))
        .await
        .expect("append");
    assert_eq!(
        revs(&take(&mut from_end, 2).await),
        [3, 4],
        "from the end: only new events"
    );
    assert_eq!(revs(&take(&mut from_one, 2).await), [3, 4]);
    nothing_within(&mut from_end, 100).await;
    nothing_within(&mut from_one, 100).await;
}

/// A subscription to a stream that does not exist yet receives its events once it is created.
pub async fn subscribe_stream_before_it_exists<S: EventStore>(store: &Arc<S>, _: Limits) {
    let s = stream("sub-3");
    let mut from_start = store.subscribe_stream(&s, SubscribeFrom::Start);
    let mut from_end = store.subscribe_stream(&s, SubscribeFrom::End);
    nothing_within(&mut from_start, 100).await;
    nothing_within(&mut from_end, 100).await;
    store
        .append(&stream("sub-3-other"), ExpectedRevision::Any, evs("a", 1))
        .await
        .expect("append to another stream");
    let r = store
        .append(&s, ExpectedRevision::NoStream, evs("a", 2))
        .await
        .expect("append");
    for sub in [&mut from_start, &mut from_end] {
        let got = take(sub, 2).await;
        assert_eq!(revs(&got), [0, 1]);
        assert_eq!(got[1].position, r.last_position);
        assert!(got.iter().all(|e| e.stream == s));
    }
}

/// A stream subscription from the start, while a spawned task appends 2,000 events to the same
/// stream, gets every revision exactly once, in order.
pub async fn subscribe_stream_has_no_gap_during_concurrent_appends<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    let s = stream("sub-gap-1");
    let noise = stream("sub-gap-noise");
    for _ in 0..20 {
        store
            .append(&s, ExpectedRevision::Any, evs("a", 10))
            .await
            .expect("append");
    }
    let total = 200 + RACING_EVENTS as usize;
    let writer = spawn_writer(store, vec![s.clone()], RACING_EVENTS);
    let noise_writer = spawn_writer(store, vec![noise], 500);
    let mut sub = store.subscribe_stream(&s, SubscribeFrom::Start);
    let got = take(&mut sub, total).await;
    writer.await.expect("the writer task");
    noise_writer.await.expect("the noise writer task");
    let expected = store.stream_events(&s).await;
    assert_eq!(expected.len(), total);
    assert_eq!(
        revs(&got),
        (0..total as u64).collect::<Vec<_>>(),
        "every revision once, in order"
    );
    assert_eq!(got, expected);
    nothing_within(&mut sub, 200).await;
}

/// A `$all` subscription from the start, while a spawned task appends 2,000 events, gets every
/// event exactly once, in position order, the same as a read of `$all`.
pub async fn subscribe_all_has_no_gap_during_concurrent_appends<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    for i in 0..300u64 {
        store
            .append(
                &stream(&format!("gap-{}", i % 7)),
                ExpectedRevision::Any,
                vec![ev("a", i)],
            )
            .await
            .expect("append");
    }
    let streams = (0..5).map(|i| stream(&format!("gap-{i}"))).collect();
    let writer = spawn_writer(store, streams, RACING_EVENTS);
    let mut sub = store.subscribe_all(SubscribeFrom::Start, EventFilter::default());
    let total = 300 + RACING_EVENTS as usize;
    let got = take(&mut sub, total).await;
    writer.await.expect("the writer task");
    let all = store.all_events().await;
    assert_eq!(all.len(), total);
    assert_eq!(positions(&got), positions(&all), "no gap, no duplicate");
    assert_eq!(got, all);
    nothing_within(&mut sub, 200).await;
}

/// A filtered `$all` subscription delivers only matching events, history and live; from a
/// position includes it; from the end gets only new events.
pub async fn subscribe_all_filtered_and_from_position<S: EventStore>(store: &Arc<S>, _: Limits) {
    store
        .append(
            &stream("fa-1"),
            ExpectedRevision::Any,
            vec![ev("a", 0), ev("b", 1)],
        )
        .await
        .expect("append");
    store
        .append(&stream("other-1"), ExpectedRevision::Any, vec![ev("a", 2)])
        .await
        .expect("append");
    let filter = EventFilter {
        category: Some("fa".into()),
        types: vec![ty("a")],
        ..EventFilter::default()
    };
    let mut sub = store.subscribe_all(SubscribeFrom::Start, filter);
    let prefixed = EventFilter {
        stream_prefix: Some("other".into()),
        ..EventFilter::default()
    };
    let mut by_prefix = store.subscribe_all(SubscribeFrom::Start, prefixed);
    let e = next(&mut sub).await;
    assert_eq!((e.stream.as_str(), e.event_type.as_str()), ("fa-1", "a"));
    let e = next(&mut by_prefix).await;
    assert_eq!((e.stream.as_str(), e.revision.0), ("other-1", 0));
    store
        .append(&stream("other-1"), ExpectedRevision::Any, vec![ev("a", 3)])
        .await
        .expect("append");
    store
        .append(
            &stream("fa-2"),
            ExpectedRevision::Any,
            vec![ev("b", 4), ev("a", 5)],
        )
        .await
        .expect("append");
    let e = next(&mut sub).await;
    assert_eq!((e.stream.as_str(), e.event_type.as_str()), ("fa-2", "a"));
    nothing_within(&mut sub, 200).await;
    let e = next(&mut by_prefix).await;
    assert_eq!((e.stream.as_str(), e.revision.0), ("other-1", 1));
    nothing_within(&mut by_prefix, 100).await;

    let all = store.all_events().await;
    let mut from = store.subscribe_all(SubscribeFrom::At(all[2].position), EventFilter::default());
    assert_eq!(
        positions(&take(&mut from, all.len() - 2).await),
        positions(&all[2..]),
        "from is inclusive"
    );
    let mut end = store.subscribe_all(SubscribeFrom::End, EventFilter::default());
    nothing_within(&mut end, 100).await;
    let r = store
        .append(&stream("fa-3"), ExpectedRevision::Any, vec![ev("c", 6)])
        .await
        .expect("append");
    assert_eq!(next(&mut end).await.position, r.first_position);
    assert_eq!(next(&mut from).await.position, r.first_position);
    let beyond = Position(r.last_position.0 + 1);
    let mut later = store.subscribe_all(SubscribeFrom::At(beyond), EventFilter::default());
    nothing_within(&mut later, 100).await;
    let r = store
        .append(&stream("fa-3"), ExpectedRevision::Any, vec![ev("c", 7)])
        .await
        .expect("append");
    assert_eq!(next(&mut later).await.position, r.first_position);
}

/// Many subscribers, some started before and some during a burst of concurrent appends, all
/// see the same sequence.
pub async fn many_subscribers_see_the_same_sequence<S: EventStore>(store: &Arc<S>, _: Limits) {
    store
        .append(&stream("many-0"), ExpectedRevision::Any, evs("a", 10))
        .await
        .expect("append");
    let mut subs: Vec<_> = (0..4)
        .map(|_| store.subscribe_all(SubscribeFrom::Start, EventFilter::default()))
        .collect();
    let burst = 500;
    let streams = (0..4).map(|i| stream(&format!("many-{i}"))).collect();
    let writer = spawn_writer(store, streams, burst);
    tokio::task::yield_now().await;
    subs.extend((0..4).map(|_| store.subscribe_all(SubscribeFrom::Start, EventFilter::default())));
    let total = 10 + burst as usize;
    let seqs = join_all(
        subs.iter_mut()
            .map(|sub| async move { positions(&take(sub, total).await) }),
    )
    .await;
    writer.await.expect("the writer task");
    let want = positions(&store.all_events().await);
    assert_eq!(want.len(), total);
    for (i, seq) in seqs.into_iter().enumerate() {
        assert_eq!(seq, want, "subscriber {i}");
    }
}

/// A `$all` subscription with a type pattern delivers the matching events of history, then the
/// matching live ones, and nothing else.
pub async fn subscribe_all_type_patterns<S: EventStore>(store: &Arc<S>, _: Limits) {
    store
        .append(
            &stream("tp-1"),
            ExpectedRevision::Any,
            vec![
                ev("order.placed", 0),
                ev("order.item.added", 1),
                ev("user.placed", 2),
            ],
        )
        .await
        .expect("append");
    let mut filter = EventFilter::default();
    filter.push_type("order.*").expect("a pattern");
    let mut sub = store.subscribe_all(SubscribeFrom::Start, filter);
    assert_eq!(next(&mut sub).await.event_type.as_str(), "order.placed");
    store
        .append(
            &stream("tp-2"),
            ExpectedRevision::Any,
            vec![ev("order.item.removed", 3), ev("order.paid", 4)],
        )
        .await
        .expect("append");
    let e = next(&mut sub).await;
    assert_eq!(
        (e.stream.as_str(), e.event_type.as_str()),
        ("tp-2", "order.paid")
    );
    nothing_within(&mut sub, 200).await;
}
