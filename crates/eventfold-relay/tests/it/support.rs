//! What the tests share: appending test events, draining a topic, the per-stream order check.

use std::collections::HashMap;
use std::time::Duration;

use eventfold_core::{
    EventStore, EventType, ExpectedRevision, NewEvent, Position, RecordedEvent, StreamName,
};
use eventfold_relay::RelayProgress;
use eventfold_transport::{ConsumerGroup, SubscribeSettings, Topic, Transport, wire};
use tokio::sync::watch;

/// Appends `count` events round-robin over `streams` streams `{category}-{i}` (`batch` events
/// per append), of types `type.a` and `type.b` in turn. Returns them.
pub async fn fill(
    store: &dyn EventStore,
    category: &str,
    streams: usize,
    count: usize,
    batch: usize,
) -> Vec<RecordedEvent> {
    let mut written = 0;
    let mut round = 0usize;
    while written < count {
        for s in 0..streams {
            if written >= count {
                break;
            }
            let n = batch.min(count - written);
            let events = (0..n)
                .map(|i| {
                    let ty = if (round * batch + i).is_multiple_of(2) {
                        "type.a"
                    } else {
                        "type.b"
                    };
                    NewEvent::json(
                        EventType::new(ty).unwrap(),
                        &serde_json::json!({ "n": written + i, "s": s }),
                    )
                })
                .collect();
            let stream = StreamName::new(format!("{category}-{s}")).unwrap();
            store
                .append(&stream, ExpectedRevision::Any, events)
                .await
                .expect("append");
            written += n;
        }
        round += 1;
    }
    read_all(store).await
}

/// Everything in `$all`, in order.
pub async fn read_all(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut from = Position(0);
    loop {
        let slice = store
            .read_all(
                eventfold_core::ReadAll::forward(1000).from(eventfold_core::ReadFrom::At(from)),
            )
            .await
            .expect("read $all");
        out.extend(slice.events);
        match slice.next {
            Some(n) => from = n,
            None => return out,
        }
    }
}

/// Receives `n` messages of `topic` as the group `group`, decoded, in the order delivered.
pub async fn drain(
    transport: &dyn Transport,
    topic: &Topic,
    group: &str,
    n: usize,
) -> Vec<RecordedEvent> {
    let mut sub = transport
        .subscribe(
            topic,
            &ConsumerGroup::new(group).unwrap(),
            &SubscribeSettings {
                prefetch: 1000,
                ..SubscribeSettings::default()
            },
        )
        .await
        .expect("subscribe");
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let incoming = tokio::time::timeout(Duration::from_secs(10), sub.receive())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages arrived", out.len()))
            .expect("receive");
        out.push(wire::decode(&incoming.message).expect("an eventfold event"));
        sub.ack(&incoming).await.expect("ack");
    }
    sub.close().await.expect("close");
    out
}

/// Waits until the relay's checkpoint is at least `position`.
pub async fn caught_up(progress: &mut watch::Receiver<RelayProgress>, position: Position) {
    let reached = tokio::time::timeout(
        Duration::from_secs(20),
        progress.wait_for(|p| p.checkpoint.is_some_and(|c| c >= position)),
    )
    .await
    .map(|r| r.is_ok());
    assert!(
        reached == Ok(true),
        "the relay did not reach {position}: {:?}",
        *progress.borrow()
    );
}

/// Checks that `received` holds every event of `expected`, each stream's events in revision
/// order: a revision may come again (at least once) but never before the ones below it.
pub fn check_per_stream_order(expected: &[RecordedEvent], received: &[RecordedEvent]) {
    let mut next: HashMap<&str, u64> = HashMap::new();
    for e in received {
        let want = next.entry(e.stream.as_str()).or_insert(0);
        assert!(
            e.revision.0 <= *want,
            "gap in {}: revision {} arrived before {}",
            e.stream,
            e.revision,
            want
        );
        if e.revision.0 == *want {
            *want += 1;
        }
    }
    let mut last: HashMap<&str, u64> = HashMap::new();
    for e in expected {
        last.insert(e.stream.as_str(), e.revision.0 + 1);
    }
    for (stream, n) in last {
        assert_eq!(
            next.get(stream).copied().unwrap_or(0),
            n,
            "stream {stream} is incomplete"
        );
    }
}
