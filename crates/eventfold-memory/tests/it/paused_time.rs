//! The store needs no thread of its own: it works on a current-thread runtime with paused time.

use eventfold_core::{
    EventFilter, EventStore, EventType, ExpectedRevision, NewEvent, StreamName, SubscribeFrom,
};
use eventfold_memory::MemoryStore;
use futures::StreamExt as _;

#[tokio::test(start_paused = true)]
async fn appends_and_subscriptions_run_on_paused_time() {
    let store = MemoryStore::new();
    let s = StreamName::new("paused-1").expect("a valid stream name");
    let ty = EventType::new("tick").expect("a valid event type");
    let mut sub = store.subscribe_all(SubscribeFrom::Start, EventFilter::default());
    let waiter = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 3 {
            match sub.next().await {
                Some(Ok(e)) => got.push(e.revision.0),
                other => panic!("the subscription ended: {other:?}"),
            }
        }
        got
    });
    for n in 0..3u64 {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        store
            .append(
                &s,
                ExpectedRevision::Any,
                vec![NewEvent::json(ty.clone(), &serde_json::json!({ "n": n }))],
            )
            .await
            .expect("append");
    }
    let got = tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
        .await
        .expect("the subscriber saw every event")
        .expect("the subscriber task");
    assert_eq!(got, [0, 1, 2]);
}
