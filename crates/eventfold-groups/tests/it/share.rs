use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eventfold_core::{EventType, ExpectedRevision, NewEvent, StreamName};
use eventfold_groups::{ConsumerName, Strategy};
use parking_lot::Mutex;
use tokio::sync::Barrier;

use crate::{Env, config, group, ids};

const EVENTS: usize = 100_000;
const STREAMS: usize = 100;
const CONSUMERS: usize = 4;

/// Four consumers share 100,000 events: each is acknowledged exactly once over all of them;
/// with `pinned`, every stream's events arrive in revision order.
async fn four_consumers_share(strategy: &str) {
    let env = Arc::new(Env::memory().await);
    // 100 streams, interleaved in batches of 100 so that streams mix in the log.
    let per_batch = 100;
    for b in 0..EVENTS / per_batch {
        let stream = StreamName::new(format!("s-{}", b % STREAMS)).unwrap();
        let batch = (0..per_batch)
            .map(|i| NewEvent::json(EventType::new("t").unwrap(), &serde_json::json!({"i": i})))
            .collect();
        env.source
            .append(&stream, ExpectedRevision::Any, batch)
            .await
            .unwrap();
    }
    let g = group("share");
    env.groups
        .put(
            &g,
            config(|c| {
                c.strategy = if strategy == "pinned" {
                    Strategy::Pinned
                } else {
                    Strategy::RoundRobin
                };
                c.max_in_flight = 10000;
            }),
        )
        .await
        .unwrap();

    let acked = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(vec![0; EVENTS]));
    let last_rev: Arc<Mutex<HashMap<String, i64>>> = Arc::new(Mutex::new(HashMap::new()));
    // Every consumer is running before any takes work.
    let start = Arc::new(Barrier::new(CONSUMERS));
    let mut tasks = Vec::new();
    for c in 0..CONSUMERS {
        let (env, acked, seen, last_rev, g, start) = (
            env.clone(),
            acked.clone(),
            seen.clone(),
            last_rev.clone(),
            g.clone(),
            start.clone(),
        );
        let pinned = strategy == "pinned";
        tasks.push(tokio::spawn(async move {
            let me = ConsumerName::new(format!("c{c}")).unwrap();
            let mut mine = 0usize;
            start.wait().await;
            while acked.load(Ordering::SeqCst) < EVENTS {
                let ds = env
                    .groups
                    .pull(&g, &me, 1000, Duration::from_millis(50))
                    .await
                    .unwrap();
                if ds.is_empty() {
                    continue;
                }
                {
                    let mut seen = seen.lock();
                    let mut last = last_rev.lock();
                    for d in &ds {
                        seen[d.event.position.0 as usize] += 1;
                        if pinned {
                            let l = last.entry(d.event.stream.to_string()).or_insert(-1);
                            assert_eq!(
                                d.event.revision.0 as i64,
                                *l + 1,
                                "stream {} out of order",
                                d.event.stream
                            );
                            *l += 1;
                        }
                    }
                }
                let out = env.groups.ack(&g, &ids(&ds)).await.unwrap();
                assert!(out.unknown.is_empty());
                mine += ds.len();
                acked.fetch_add(ds.len(), Ordering::SeqCst);
                // A handler's turn: the in-memory store answers without ever yielding, and a
                // consumer that never yields would take every stream while it stays live.
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut per_consumer = Vec::new();
    for t in tasks {
        per_consumer.push(t.await.unwrap());
    }
    assert_eq!(per_consumer.iter().sum::<usize>(), EVENTS);
    assert!(
        seen.lock().iter().all(|n| *n == 1),
        "every event delivered exactly once"
    );
    assert!(
        per_consumer.iter().filter(|n| **n > 0).count() >= 2,
        "the work is shared: {per_consumer:?}"
    );
    let info = env.groups.info(&g).await.unwrap();
    assert_eq!(info.acked_total, EVENTS as u64);
    assert_eq!(info.lag, 0);
    if let Ok(env) = Arc::try_unwrap(env) {
        env.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_consumers_share_100k_round_robin() {
    four_consumers_share("round_robin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_consumers_share_100k_pinned_in_order() {
    four_consumers_share("pinned").await;
}
