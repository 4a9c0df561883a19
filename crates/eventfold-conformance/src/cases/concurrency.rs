//! Concurrent writers, as spawned tasks racing on the store's threads.

use std::sync::Arc;

use eventfold_core::{EventStore, ExpectedRevision, Limits, Position, Revision, StoreError};
use tokio::sync::Barrier;

use crate::support::{StoreExt as _, assert_wrong, ev, evs, positions, stream};

/// Racers appending with the same `Exact` expectation: exactly one wins each round, the others
/// are refused with the winner's revision as `actual`, and the stream stays contiguous.
pub async fn racing_exact_appends_have_one_winner_per_revision<S: EventStore>(
    store: &Arc<S>,
    _: Limits,
) {
    const RACERS: usize = 8;
    const ROUNDS: u64 = 10;
    let s = stream("race-1");
    store
        .append(&s, ExpectedRevision::NoStream, evs("a", 1))
        .await
        .expect("append");
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|k| {
                let (store, s, barrier) = (Arc::clone(store), s.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .append(&s, ExpectedRevision::Exact(round), vec![ev("r", k as u64)])
                        .await
                })
            })
            .collect();
        let mut wins = Vec::new();
        for racer in racers {
            match racer.await.expect("a racer task") {
                Ok(r) => wins.push(r),
                lost => assert_wrong(lost, &s, ExpectedRevision::Exact(round), Some(round + 1)),
            }
        }
        assert_eq!(
            wins.len(),
            1,
            "round {round}: exactly one racer wins: {wins:?}"
        );
        assert_eq!(wins[0].first_revision, Revision(round + 1));
    }
    let read = store.stream_events(&s).await;
    assert_eq!(
        read.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
        (0..=ROUNDS).collect::<Vec<u64>>()
    );
}

/// Writers in a read-then-append-`Exact` loop (optimistic concurrency) on one stream: every
/// attempt either wins a revision or is refused, none is lost or duplicated.
pub async fn optimistic_concurrency_loop_loses_nothing<S: EventStore>(store: &Arc<S>, _: Limits) {
    const WRITERS: u64 = 4;
    const EACH: u64 = 25;
    let s = stream("occ-1");
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, s) = (Arc::clone(store), s.clone());
            tokio::spawn(async move {
                let mut conflicts = 0u64;
                for k in 0..EACH {
                    loop {
                        let expected = match store.stream_info(&s).await {
                            Ok(info) => ExpectedRevision::Exact(info.last_revision.0),
                            Err(StoreError::StreamNotFound { .. }) => ExpectedRevision::NoStream,
                            Err(e) => panic!("stream info: {e}"),
                        };
                        match store
                            .append(&s, expected, vec![ev("w", w * 1000 + k)])
                            .await
                        {
                            Ok(_) => break,
                            Err(StoreError::WrongExpectedRevision { .. }) => conflicts += 1,
                            Err(e) => panic!("append: {e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for w in writers {
        w.await.expect("a writer task");
    }
    let read = store.stream_events(&s).await;
    assert_eq!(
        read.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
        (0..WRITERS * EACH).collect::<Vec<u64>>()
    );
    let mut ns: Vec<u64> = read
        .iter()
        .map(|e| {
            e.data_json()
                .and_then(|d| d["n"].as_u64())
                .expect("the data written: {\"n\": u64}")
        })
        .collect();
    ns.sort_unstable();
    let want: Vec<u64> = (0..WRITERS)
        .flat_map(|w| (0..EACH).map(move |k| w * 1000 + k))
        .collect();
    assert_eq!(ns, want, "every append exactly once");
}

/// Many tasks appending to their own streams at once: every event is present, each stream is
/// contiguous, and every position is unique and increases in `$all`.
pub async fn concurrent_appends_to_many_streams<S: EventStore>(store: &Arc<S>, _: Limits) {
    const STREAMS: u64 = 32;
    const APPENDS: u64 = 10;
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let s = stream(&format!("conc-{i}"));
                let mut written = Vec::new();
                for k in 0..APPENDS {
                    let expected = match k {
                        0 => ExpectedRevision::NoStream,
                        _ => ExpectedRevision::Exact(2 * k - 1),
                    };
                    let r = store
                        .append(&s, expected, vec![ev("a", 2 * k), ev("a", 2 * k + 1)])
                        .await
                        .expect("append");
                    assert_eq!(r.first_revision, Revision(2 * k));
                    written.extend([r.first_position, r.last_position]);
                }
                written
            })
        })
        .collect();
    let mut written: Vec<Position> = Vec::new();
    for t in tasks {
        written.extend(t.await.expect("an appending task"));
    }
    let all = store.all_events().await;
    assert_eq!(all.len() as u64, STREAMS * APPENDS * 2);
    let p = positions(&all);
    assert!(
        p.windows(2).all(|w| w[0] < w[1]),
        "$all positions strictly increase"
    );
    written.sort_unstable();
    assert_eq!(written, p, "the appends' positions are those in $all");
    for i in 0..STREAMS {
        let s = stream(&format!("conc-{i}"));
        let revs: Vec<u64> = store
            .stream_events(&s)
            .await
            .iter()
            .map(|e| e.revision.0)
            .collect();
        assert_eq!(revs, (0..APPENDS * 2).collect::<Vec<_>>(), "stream {s}");
    }
}
