//! No subscriber ever skips an event: 16 connections append concurrently while live `$all`
//! subscribers run, and every subscriber sees every committed event exactly once, in position
//! order. The companion switches the ordering lock off and shows the same check catches skips,
//! so the proof is not vacuous.

use std::time::Duration;

use eventfold_core::{
    EventFilter, EventStore, EventType, ExpectedRevision, NewEvent, ReadAll, ReadFrom, StreamName,
    SubscribeFrom,
};
use eventfold_store_postgres::{PostgresOptions, PostgresStore};
use futures::StreamExt as _;

use crate::TestDb;

const WRITERS: usize = 16;
const APPENDS_PER_WRITER: usize = 40;
const SUBSCRIBERS: usize = 3;

/// What one run saw: the committed positions in order, and each subscriber's deliveries.
struct Run {
    committed: Vec<u64>,
    seen: Vec<Vec<u64>>,
}

async fn run(store: PostgresStore) -> Run {
    let mut subscribers = Vec::new();
    let (last_tx, last_rx) = tokio::sync::watch::channel(None::<u64>);
    for _ in 0..SUBSCRIBERS {
        let mut sub = store.subscribe_all(SubscribeFrom::Start, EventFilter::default());
        let mut last = last_rx.clone();
        // Polled once before the writers start, so it is live from the start.
        subscribers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let done = last.borrow().is_some_and(|l| seen.last() == Some(&l));
                if done {
                    return seen;
                }
                // A subscriber that skipped the last event would wait forever: give up once
                // the writers are done and nothing came for a while.
                let idle = if last.borrow().is_some() {
                    Duration::from_secs(2)
                } else {
                    Duration::from_secs(30)
                };
                tokio::select! {
                    e = tokio::time::timeout(idle, sub.next()) => match e {
                        Ok(Some(Ok(e))) => seen.push(e.position.0),
                        Ok(other) => panic!("the subscription ended: {other:?}"),
                        Err(_) => return seen,
                    },
                    _ = last.changed() => {}
                }
            }
        }));
    }
    let ty = EventType::new("tick").expect("a valid event type");
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let ty = ty.clone();
        writers.push(tokio::spawn(async move {
            let s = StreamName::new(format!("writer-{w}")).expect("a valid stream name");
            for n in 0..APPENDS_PER_WRITER {
                let events = (0..1 + n % 3)
                    .map(|i| NewEvent::json(ty.clone(), &serde_json::json!({ "n": n, "i": i })))
                    .collect();
                store
                    .append(&s, ExpectedRevision::Any, events)
                    .await
                    .expect("append");
            }
        }));
    }
    for w in writers {
        w.await.expect("a writer task");
    }
    let mut committed = Vec::new();
    let mut from = ReadFrom::Start;
    loop {
        let page = store
            .read_all(ReadAll::forward(10_000).from(from))
            .await
            .expect("read $all");
        committed.extend(page.events.iter().map(|e| e.position.0));
        match page.next {
            Some(p) => from = ReadFrom::At(p),
            None => break,
        }
    }
    last_tx
        .send(committed.last().copied())
        .expect("the subscribers listen");
    let mut seen = Vec::new();
    for s in subscribers {
        seen.push(s.await.expect("a subscriber task"));
    }
    Run { committed, seen }
}

fn options(serialize_positions: bool) -> PostgresOptions {
    PostgresOptions {
        pool_size: WRITERS + SUBSCRIBERS + 1,
        serialize_positions,
        ..PostgresOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_never_make_a_subscriber_skip() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let r = run(db.store(options(true)).await).await;
    let expected: usize = WRITERS * (0..APPENDS_PER_WRITER).map(|n| 1 + n % 3).sum::<usize>();
    assert_eq!(r.committed.len(), expected, "every append was committed");
    assert!(
        r.committed.windows(2).all(|w| w[0] < w[1]),
        "$all is in position order"
    );
    for (i, seen) in r.seen.iter().enumerate() {
        assert_eq!(
            seen, &r.committed,
            "subscriber {i} saw every committed event exactly once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ordering_lock_the_check_catches_skips() {
    // Interleavings are up to the scheduler: a few runs, each on a fresh database.
    for attempt in 0..5 {
        let Some(db) = TestDb::create().await else {
            return;
        };
        let r = run(db.store(options(false)).await).await;
        let missed: Vec<usize> = r
            .seen
            .iter()
            .map(|seen| r.committed.iter().filter(|p| !seen.contains(p)).count())
            .collect();
        if r.seen.iter().any(|seen| seen != &r.committed) {
            eprintln!("attempt {attempt}: events missed per subscriber: {missed:?}");
            return;
        }
        eprintln!("attempt {attempt}: no subscriber skipped an event; trying again");
    }
    panic!("with positions taken outside the write's transaction, no subscriber ever skipped");
}
