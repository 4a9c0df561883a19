//! Projections on the real embedded engine: catch-up then live, restarts, failures, rebuild,
//! lag, and the in-memory test harness.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use eventfold::core::{
    EventId, EventStore, EventType, ExpectedRevision, NewEvent, Position, StoreError, StreamName,
};
use eventfold::projection::{Phase, RebuildProgress};
use eventfold::testing::{ProjectionTest, append_events};
use eventfold::{
    BoxError, Codec, Context, DomainEvent, Envelope, InMemoryReadModel, MemoryProjection,
    Projection, ProjectionError, ProjectionProcessor, RetryPolicy, encode_event,
};
use serde::{Deserialize, Serialize};

use crate::support::{Flaky, io_error, memory_store, network_error, sample, scrape, store_in};

const WAIT: Duration = Duration::from_secs(20);

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
    // On the engine: history and live events through its writer thread and segment reads.
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
    let store = memory_store();
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
    let store = memory_store();
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

/// Store retries after 1 ms, a few times at most (so a bug that loops ends the test).
fn fast_store_retry() -> RetryPolicy {
    RetryPolicy::new(10)
        .initial_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
}

#[tokio::test]
async fn transient_store_errors_are_retried_from_the_checkpoint_and_each_event_applied_once() {
    let flaky = Flaky::new(memory_store());
    let store: Arc<dyn EventStore> = flaky.clone();
    add(&*store, "f", 1..=50).await;
    // Finding the head fails once; then the subscription breaks twice mid-way (network, disk).
    flaky.fail_read_all(network_error());
    flaky.break_subscription(20, network_error());
    flaky.break_subscription(7, io_error());

    let model = InMemoryReadModel::new(Totals);
    let handle = ProjectionProcessor::new(store.clone(), model.clone())
        .batch_size(8)
        .store_retry(fast_store_retry())
        .start();
    let last = add(&*store, "f", 51..=60).await;
    handle.wait_until(last).await.unwrap();
    // `Totals` fails on an event applied twice: the count proves exactly once.
    assert_eq!(model.read(|s| (s.count, s.sum)), (60, (1..=60).sum()));
    assert_eq!(flaky.faults_left(), 0);
    assert!(matches!(handle.status().phase, Phase::Live));
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn a_store_error_retrying_cannot_fix_stops_the_processor() {
    let flaky = Flaky::new(memory_store());
    let head = add(&*flaky, "c", 1..=10).await;
    flaky.break_subscription(4, StoreError::Closed);

    let model = InMemoryReadModel::new(Totals);
    let handle = ProjectionProcessor::new(flaky.clone(), model.clone())
        .batch_size(2)
        .store_retry(fast_store_retry())
        .start();
    let err = handle.wait_until(head).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ProjectionError::Store {
                source: StoreError::Closed,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("the store is closed"), "{err}");
    assert!(matches!(handle.status().phase, Phase::Failed(_)));
    assert_eq!(model.read(|s| s.count), 4);
    assert!(handle.join().await.is_err());
}

#[tokio::test]
async fn while_retrying_the_status_shows_the_error_and_a_stop_ends_the_wait() {
    let flaky = Flaky::new(memory_store());
    add(&*flaky, "r", 1..=3).await;
    flaky.break_subscription(3, network_error());

    let model = InMemoryReadModel::new(Totals);
    let handle = ProjectionProcessor::new(flaky.clone(), model.clone())
        .store_retry(RetryPolicy::forever().initial_delay(Duration::from_secs(3600)))
        .start();
    let mut status = handle.watch_status();
    let retrying = tokio::time::timeout(
        WAIT,
        status.wait_for(|s| matches!(s.phase, Phase::Retrying { .. })),
    )
    .await
    .expect("the processor retries")
    .unwrap()
    .clone();
    let Phase::Retrying { error, attempt } = retrying.phase else {
        unreachable!()
    };
    // The run applied the three events before the error, so the count starts again at 1.
    assert_eq!(attempt, 1);
    assert!(error.to_string().contains("connection reset"), "{error}");
    assert_eq!(retrying.position, model.position());
    assert_eq!(model.read(|s| s.count), 3);
    tokio::time::timeout(WAIT, handle.stop())
        .await
        .expect("a stop does not wait out the hour")
        .unwrap();
}

#[tokio::test]
async fn rebuild_resets_and_replays_everything_reporting_progress() {
    let store = memory_store();
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

#[tokio::test]
async fn a_projections_lag_gauge_falls_to_zero_once_it_has_caught_up() {
    let store = memory_store();
    add(&*store, "a", 1..=3).await;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = eventfold::FrameworkMetrics::new(&mut registry);
    let model = InMemoryReadModel::new(Totals);
    let processor = ProjectionProcessor::new(store.clone(), model.clone())
        .batch_size(1)
        .metrics(metrics);
    let lag = "eventfold_projection_lag{projection=\"totals\"}";
    // After each batch of one, the gauge shows the events still to apply.
    let mut seen = Vec::new();
    processor
        .catch_up(|_| seen.push(sample(&scrape(&registry), lag)))
        .await
        .unwrap();
    assert_eq!(seen, [Some(2.0), Some(1.0), Some(0.0)]);
    let text = scrape(&registry);
    assert_eq!(
        sample(
            &text,
            "eventfold_consumer_events_processed_total{consumer=\"totals\",type=\"counter.added\"}"
        ),
        Some(3.0),
        "{text}"
    );

    // Started: behind by the two events appended since, then caught up again.
    let last = add(&*store, "a", [4, 5]).await;
    let handle = processor.start();
    handle.wait_until(last).await.unwrap();
    let text = scrape(&registry);
    assert_eq!(sample(&text, lag), Some(0.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "eventfold_consumer_processing_duration_seconds_count{consumer=\"totals\",outcome=\"succeeded\"}"
        ),
        Some(5.0),
        "one observation per batch: {text}"
    );
    handle.stop().await.unwrap();
}
