//! Projections on the real embedded engine: catch-up then live, restarts, failures, rebuild,
//! lag, and the in-memory test harness.

use std::collections::HashSet;

use eventfold::core::{
    EventId, EventStore, EventType, ExpectedRevision, NewEvent, Position, StreamName,
};
use eventfold::projection::{Phase, RebuildProgress};
use eventfold::testing::{ProjectionTest, append_events};
use eventfold::{
    BoxError, Codec, Context, DomainEvent, Envelope, InMemoryReadModel, MemoryProjection,
    Projection, ProjectionError, ProjectionProcessor, encode_event,
};
use serde::{Deserialize, Serialize};

use crate::support::store_in;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Added {
    n: u64,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "counter.")]
enum CounterEvent {
    Added(Added),
    Poisoned,
}

/// Counts events and refuses to apply one twice.
struct Totals;

#[derive(Debug, Default, PartialEq)]
struct TotalsState {
    count: u64,
    sum: u64,
    seen: HashSet<EventId>,
}

impl Projection for Totals {
    type Event = CounterEvent;
    fn name(&self) -> &str {
        "totals"
    }
}

impl MemoryProjection for Totals {
    type State = TotalsState;

    fn apply(
        &self,
        state: &mut TotalsState,
        events: &[Envelope<CounterEvent>],
    ) -> Result<(), BoxError> {
        for e in events {
            if !state.seen.insert(e.id) {
                return Err(format!("event {} applied twice", e.id).into());
            }
            match &e.event {
                CounterEvent::Added(a) => {
                    state.count += 1;
                    state.sum += a.n;
                }
                CounterEvent::Poisoned => return Err("a poisoned event".into()),
            }
        }
        Ok(())
    }
}

/// Appends `Added { n }` for each `n` of `ns` to `counter-{stream}`; the last position.
async fn add(store: &dyn EventStore, stream: &str, ns: impl IntoIterator<Item = u64>) -> Position {
    let events = ns.into_iter().map(|n| CounterEvent::Added(Added { n }));
    append_events(store, &format!("counter-{stream}"), events)
        .await
        .unwrap()
}

async fn append_foreign(store: &dyn EventStore) {
    let e = NewEvent::json(
        EventType::new("unrelated.thing").unwrap(),
        &serde_json::json!({"not": "a counter event"}),
    );
    store
        .append(
            &StreamName::new("other-1").unwrap(),
            ExpectedRevision::Any,
            vec![e],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn catches_up_then_follows_live_events_skipping_foreign_types() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    add(&*store, "a", 1..=150).await;
    append_foreign(&*store).await;
    let last = add(&*store, "b", 151..=250).await;

    let model = InMemoryReadModel::new(Totals);
    let processor = ProjectionProcessor::new(store.clone(), model.clone()).batch_size(64);
    let handle = processor.start();
    handle.wait_until(last).await.unwrap();
    assert_eq!(model.read(|s| (s.count, s.sum)), (250, (1..=250).sum()));
    assert!(matches!(handle.status().phase, Phase::Live));

    append_foreign(&*store).await;
    let last = add(&*store, "a", [1000, 2000]).await;
    let status = handle.wait_until(last).await.unwrap();
    assert_eq!(status.events_applied, 252);
    assert_eq!(model.read(|s| s.count), 252);
    assert_eq!(model.position(), Some(last));
    let lag = handle.lag().await.unwrap();
    assert_eq!((lag.head, lag.lag_events), (Some(last), 0));
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn a_restart_continues_from_the_checkpoint_without_skipping_or_applying_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let model = InMemoryReadModel::new(Totals);
    let processor = ProjectionProcessor::new(store.clone(), model.clone()).batch_size(7);

    let mut total = 0;
    for round in 0..4u64 {
        let last = add(&*store, "r", (0..50).map(|i| round * 100 + i)).await;
        total += 50;
        let handle = processor.start();
        handle.wait_until(last).await.unwrap();
        handle.stop().await.unwrap();
        // Each event once: `Totals` fails on a duplicate, and the count matches the log.
        assert_eq!(model.read(|s| s.count), total);
    }
    assert_eq!(model.read(|s| s.seen.len() as u64), total);
}

#[tokio::test]
async fn a_failing_batch_stops_the_processor_with_the_error_and_the_lag_shows() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let ok = add(&*store, "p", 1..=10).await;
    let poisoned = encode_event(&CounterEvent::Poisoned, Codec::Json, &Context::new()).unwrap();
    store
        .append(
            &StreamName::new("counter-p").unwrap(),
            ExpectedRevision::Any,
            vec![poisoned],
        )
        .await
        .unwrap();
    let head = add(&*store, "p", 11..=20).await;

    let model = InMemoryReadModel::new(Totals);
    // One event per batch, so the ten good ones are applied before the poisoned one.
    let handle = ProjectionProcessor::new(store.clone(), model.clone())
        .batch_size(1)
        .start();
    let err = handle.wait_until(head).await.unwrap_err();
    assert!(
        matches!(&err, ProjectionError::Apply { first, .. } if *first == ok.0 + 1),
        "{err}"
    );
    assert!(err.to_string().contains("a poisoned event"), "{err}");
    assert!(matches!(handle.status().phase, Phase::Failed(_)));
    assert_eq!(handle.status().position, Some(ok));
    let lag = handle.lag().await.unwrap();
    assert_eq!(lag.position, Some(ok));
    assert_eq!(lag.head, Some(head));
    assert_eq!(lag.lag_events, head.0 - ok.0);
    assert!(handle.join().await.is_err());
}

#[tokio::test]
async fn rebuild_resets_and_replays_everything_reporting_progress() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let head = add(&*store, "x", 1..=95).await;
    let model = InMemoryReadModel::new(Totals);
    let processor = ProjectionProcessor::new(store.clone(), model.clone()).batch_size(10);
    processor.catch_up(|_| {}).await.unwrap();
    assert_eq!(model.read(|s| s.count), 95);

    let mut progress: Vec<RebuildProgress> = Vec::new();
    let report = processor.rebuild(|p| progress.push(*p)).await.unwrap();
    assert_eq!(report.events, 95);
    assert_eq!(report.position, Some(head));
    // Rebuilt from scratch: a replay onto the old state would have failed on duplicates.
    assert_eq!(model.read(|s| (s.count, s.sum)), (95, (1..=95).sum()));
    // Batches of at most 10, each reported.
    assert!(progress.len() >= 10, "{progress:?}");
    assert!(progress.iter().all(|p| p.head == head));
    assert!(
        progress
            .windows(2)
            .all(|w| w[0].events_done < w[1].events_done)
    );
    let last = progress.last().unwrap();
    assert_eq!((last.events_done, last.position), (95, head));
}

#[test]
fn the_harness_runs_a_projection_over_given_events() {
    ProjectionTest::new(Totals)
        .given_in("counter-1", [CounterEvent::Added(Added { n: 2 })])
        .given_in("counter-2", [CounterEvent::Added(Added { n: 3 })])
        .batch_size(1)
        .then(|s| assert_eq!((s.count, s.sum), (2, 5)));

    ProjectionTest::new(Totals)
        .given([CounterEvent::Added(Added { n: 1 }), CounterEvent::Poisoned])
        .then_error(|e| assert!(e.to_string().contains("poisoned")));
}

#[test]
fn the_default_filter_is_the_event_types_of_the_enum() {
    let filter = Totals.filter();
    let types: Vec<&str> = filter.types.iter().map(|t| t.as_str()).collect();
    assert_eq!(types, CounterEvent::EVENT_TYPES);
}
