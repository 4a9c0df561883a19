//! Event handlers: retry delays, dead letters, checkpoints, idempotency, and the same handler
//! on a store (the in-memory one) and on a real server's consumer group; retry timing on
//! tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use eventfold::core::{EventStore, ExpectedRevision, Position, StoreError, StreamName};
use eventfold::handler::{Attempted, handle_with_retry};
use eventfold::{
    BoxError, Context, DeadLetters, DomainEvent, Envelope, EventHandler, GroupRunner, Handled,
    HandledOutcome, HandlerObserver, HandlerRunner, Idempotent, InMemoryCheckpoints,
    InMemoryProcessedIds, Permanent, ProcessedIds, RetryPolicy, RunnerError, StoreCheckpoints,
    encode_event,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::support::{Flaky, Server, io_error, memory_store, network_error, sample, scrape};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placed {
    pub order_id: String,
    pub sku: String,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "order.")]
pub enum OrderEvent {
    Placed(Placed),
}

/// Records what it handled; fails every attempt on SKU `POISON` (while `poisoned` is set).
#[derive(Default)]
struct Recorder {
    handled: Mutex<Vec<String>>,
    attempts: Mutex<Vec<(String, Instant)>>,
    cured: std::sync::atomic::AtomicBool,
    /// Fail this many first attempts of every event.
    flaky: u32,
}

#[async_trait::async_trait]
impl EventHandler<OrderEvent> for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn handle(&self, envelope: &Envelope<OrderEvent>) -> Result<(), BoxError> {
        let OrderEvent::Placed(p) = &envelope.event;
        let n = {
            let mut a = self.attempts.lock();
            a.push((p.order_id.clone(), Instant::now()));
            a.iter().filter(|(id, _)| *id == p.order_id).count() as u32
        };
        if p.sku == "POISON" && !self.cured.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(format!("no stock record for SKU {}", p.sku).into());
        }
        if n <= self.flaky {
            return Err("temporarily unavailable".into());
        }
        self.handled.lock().push(p.order_id.clone());
        Ok(())
    }
}

fn placed(order: &str, sku: &str) -> OrderEvent {
    OrderEvent::Placed(Placed {
        order_id: order.into(),
        sku: sku.into(),
    })
}

fn envelope(event: OrderEvent) -> Envelope<OrderEvent> {
    let new = encode_event(&event, eventfold::Codec::Json, &Context::new()).unwrap();
    Envelope {
        event,
        id: new.id,
        stream: StreamName::new("order-1").unwrap(),
        revision: eventfold::core::Revision(0),
        position: Position(0),
        timestamp: eventfold::core::Timestamp::now(),
        metadata: new.metadata,
    }
}

/// Appends one `order.placed` per (order, sku) to `order-{order}`; the last position.
async fn place(store: &dyn EventStore, orders: &[(&str, &str)]) -> Position {
    let mut last = Position(0);
    for (order, sku) in orders {
        let e = encode_event(&placed(order, sku), eventfold::Codec::Json, &Context::new()).unwrap();
        let stream = StreamName::new(format!("order-{order}")).unwrap();
        last = store
            .append(&stream, ExpectedRevision::Any, vec![e])
            .await
            .unwrap()
            .last_position;
    }
    last
}

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(attempts)
        .initial_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
}

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn retry_delays_grow_exponentially_within_the_jitter_bounds_and_the_cap() {
    let policy = RetryPolicy::new(10)
        .initial_delay(Duration::from_millis(100))
        .multiplier(2.0)
        .max_delay(Duration::from_secs(1))
        .jitter(0.25);
    let base: Vec<u128> = (1..=6).map(|a| policy.base_delay(a).as_millis()).collect();
    assert_eq!(base, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(policy.delay_with_roll(3, 0.0), Duration::from_millis(400));
    assert_eq!(policy.delay_with_roll(3, 1.0), Duration::from_millis(300));
    for attempt in 1..=8 {
        let cap = policy.base_delay(attempt);
        for _ in 0..200 {
            let d = policy.delay_for(attempt);
            assert!(
                d <= cap && d >= cap.mul_f64(0.75),
                "{d:?} outside 75%..100% of {cap:?}"
            );
        }
    }
    // Absurd attempts and settings do not overflow or panic.
    assert_eq!(policy.base_delay(u32::MAX), Duration::from_secs(1));
    let odd = RetryPolicy::new(0).multiplier(f64::NAN).jitter(7.0);
    assert_eq!(odd.max_attempts(), Some(1));
    assert_eq!(odd.delay_with_roll(5, 0.5), Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn handle_with_retry_sleeps_the_policy_delays_on_tokios_clock() {
    let handler = Recorder {
        flaky: 3,
        ..Recorder::default()
    };
    let policy = RetryPolicy::new(5)
        .initial_delay(Duration::from_millis(100))
        .max_delay(Duration::from_millis(300))
        .jitter(0.0);
    let start = Instant::now();
    let out = handle_with_retry(&handler, &envelope(placed("o-1", "A")), &policy).await;
    assert!(
        matches!(out, Attempted::Succeeded { attempts: 4 }),
        "{out:?}"
    );
    let gaps: Vec<u128> = handler
        .attempts
        .lock()
        .iter()
        .map(|(_, at)| (*at - start).as_millis())
        .collect();
    // Attempt 1 at once, then 100, 200 and (capped) 300 ms later.
    assert_eq!(gaps, [0, 100, 300, 600]);

    // With jitter every wait lies in [delay * (1 - jitter), delay].
    let handler = Recorder {
        flaky: 10,
        ..Recorder::default()
    };
    let policy = policy.jitter(0.5).initial_delay(Duration::from_millis(200));
    let out = handle_with_retry(&handler, &envelope(placed("o-2", "A")), &policy).await;
    assert!(
        matches!(out, Attempted::Failed { attempts: 5, .. }),
        "{out:?}"
    );
    let at: Vec<Instant> = handler.attempts.lock().iter().map(|(_, t)| *t).collect();
    for (i, w) in at.windows(2).enumerate() {
        let cap = policy.base_delay(i as u32 + 1);
        let waited = w[1] - w[0];
        assert!(
            waited <= cap && waited >= cap / 2,
            "wait {i}: {waited:?} vs {cap:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_not_retried() {
    struct Refuses;
    #[async_trait::async_trait]
    impl EventHandler<OrderEvent> for Refuses {
        fn name(&self) -> &str {
            "refuses"
        }
        async fn handle(&self, _: &Envelope<OrderEvent>) -> Result<(), BoxError> {
            Err(Permanent::new("order is malformed").into())
        }
    }
    let out = handle_with_retry(&Refuses, &envelope(placed("o", "A")), &RetryPolicy::new(9)).await;
    let Attempted::Failed { attempts, error } = out else {
        panic!("succeeded")
    };
    assert_eq!(attempts, 1);
    assert!(error.to_string().contains("order is malformed"));
}

#[tokio::test]
async fn a_poison_event_is_dead_lettered_after_the_last_attempt_while_the_rest_flows() {
    let store = memory_store();
    let last = place(
        &*store,
        &[("1", "A"), ("2", "POISON"), ("3", "B"), ("4", "C")],
    )
    .await;
    let handler = Arc::new(Recorder::default());
    let checkpoints = Arc::new(InMemoryCheckpoints::new());
    let mut running = HandlerRunner::new(store.clone(), checkpoints, handler.clone())
        .retry(fast_retry(3))
        .spawn();
    let stats = tokio::time::timeout(WAIT, running.wait_for_checkpoint(last))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*handler.handled.lock(), ["1", "3", "4"]);
    assert_eq!(
        (stats.handled, stats.dead_lettered, stats.failed_attempts),
        (3, 1, 3)
    );
    let poison_attempts = handler
        .attempts
        .lock()
        .iter()
        .filter(|(o, _)| o == "2")
        .count();
    assert_eq!(poison_attempts, 3);

    // The dead letter holds the original event, the error and the attempts, and is readable
    // from the store; live events keep flowing after it.
    let letters = DeadLetters::new(store.clone())
        .list("recorder")
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.original.stream.as_str(), "order-2");
    assert!(
        letter.error.contains("no stock record for SKU POISON"),
        "{}",
        letter.error
    );
    let decoded = eventfold::Upcasters::new()
        .decode::<OrderEvent>(letter.original.clone())
        .unwrap();
    assert_eq!(decoded.event, placed("2", "POISON"));

    let last = place(&*store, &[("5", "D")]).await;
    tokio::time::timeout(WAIT, running.wait_for_checkpoint(last))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handler.handled.lock().last().unwrap(), "5");
    running.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn on_paused_time_a_store_runner_waits_exactly_the_policy_delays_before_dead_lettering() {
    // The memory store runs on the test's runtime, so tokio's paused clock covers the whole
    // runner: retries of minutes take no real time and their timing is exact.
    let store = memory_store();
    let last = place(&*store, &[("1", "A"), ("2", "POISON"), ("3", "B")]).await;
    let handler = Arc::new(Recorder::default());
    let retry = RetryPolicy::new(3)
        .initial_delay(Duration::from_secs(20))
        .max_delay(Duration::from_secs(300))
        .jitter(0.0);
    let start = Instant::now();
    let mut running = HandlerRunner::new(
        store.clone(),
        Arc::new(InMemoryCheckpoints::new()),
        handler.clone(),
    )
    .retry(retry)
    .spawn();
    let stats = running.wait_for_checkpoint(last).await.unwrap();
    assert_eq!(
        (stats.handled, stats.dead_lettered, stats.failed_attempts),
        (2, 1, 3)
    );
    let poison: Vec<Duration> = handler
        .attempts
        .lock()
        .iter()
        .filter(|(o, _)| o == "2")
        .map(|(_, at)| *at - start)
        .collect();
    // Attempt 1 at once, then after 20 s and 40 s more.
    assert_eq!(
        poison,
        [
            Duration::ZERO,
            Duration::from_secs(20),
            Duration::from_secs(60)
        ]
    );
    assert_eq!(*handler.handled.lock(), ["1", "3"]);
    let letters = DeadLetters::new(store).list("recorder").await.unwrap();
    assert_eq!(letters.len(), 1);
    running.stop().await.unwrap();
}

/// What a [`HandlerObserver`] saw: (event type, outcome, attempts, duration).
type Observed = Arc<Mutex<Vec<(String, HandledOutcome, u32, Duration)>>>;

fn observer() -> (Observed, Arc<dyn HandlerObserver>) {
    let seen: Observed = Arc::default();
    let s = seen.clone();
    let observer = move |h: &Handled<'_>| {
        assert_eq!(h.handler, "recorder");
        s.lock()
            .push((h.event_type.to_owned(), h.outcome, h.attempts, h.duration));
    };
    (seen, Arc::new(observer))
}

#[tokio::test(start_paused = true)]
async fn a_store_runners_observer_gets_each_events_outcome_attempts_and_time() {
    let store = memory_store();
    let last = place(&*store, &[("1", "A"), ("2", "POISON"), ("3", "B")]).await;
    let retry = RetryPolicy::new(3)
        .initial_delay(Duration::from_secs(20))
        .max_delay(Duration::from_secs(300))
        .jitter(0.0);
    let (seen, observer) = observer();
    let mut running = HandlerRunner::new(
        store,
        Arc::new(InMemoryCheckpoints::new()),
        Recorder::default(),
    )
    .retry(retry)
    .observer(observer)
    .spawn();
    running.wait_for_checkpoint(last).await.unwrap();
    let ok = |d| ("order.placed".to_owned(), HandledOutcome::Succeeded, 1, d);
    // The poison event's time holds its retry delays: 20 s, then 40 s.
    assert_eq!(
        *seen.lock(),
        [
            ok(Duration::ZERO),
            (
                "order.placed".to_owned(),
                HandledOutcome::Failed,
                3,
                Duration::from_secs(60)
            ),
            ok(Duration::ZERO),
        ]
    );
    running.stop().await.unwrap();
}

/// Store retries after 1 ms, a few times at most (so a bug that loops ends the test).
fn fast_store_retry() -> RetryPolicy {
    fast_retry(10)
}

#[tokio::test]
async fn the_store_runner_survives_transient_store_errors_without_losing_an_event() {
    let engine = memory_store();
    let flaky = Flaky::new(engine);
    let store: Arc<dyn EventStore> = flaky.clone();
    let ids: Vec<String> = (1..=30).map(|i| format!("{i:02}")).collect();
    let orders: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "A")).collect();
    place(&*store, &orders[..20]).await;
    // The subscription breaks twice mid-way: a network error, then a disk error.
    flaky.break_subscription(10, network_error());
    flaky.break_subscription(3, io_error());

    let handler = Arc::new(Recorder::default());
    let mut running = HandlerRunner::new(
        store.clone(),
        Arc::new(InMemoryCheckpoints::new()),
        handler.clone(),
    )
    .batch_events_max(4)
    .store_retry(fast_store_retry())
    .spawn();
    let last = place(&*store, &orders[20..]).await;
    let stats = tokio::time::timeout(WAIT, running.wait_for_checkpoint(last))
        .await
        .unwrap()
        .unwrap();
    // At least once, nothing lost.
    let mut handled = handler.handled.lock().clone();
    assert!(handled.len() >= ids.len(), "{handled:?}");
    handled.sort();
    handled.dedup();
    assert_eq!(handled, ids);
    assert_eq!(flaky.faults_left(), 0);
    assert_eq!(
        (stats.store_errors, stats.retrying, stats.error),
        (2, None, None)
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_store_error_retrying_cannot_fix_stops_the_store_runner() {
    let engine = memory_store();
    let flaky = Flaky::new(engine);
    place(&*flaky, &[("1", "A"), ("2", "B"), ("3", "C")]).await;
    flaky.break_subscription(2, StoreError::Closed);

    let handler = Arc::new(Recorder::default());
    let mut running = HandlerRunner::new(
        flaky.clone(),
        Arc::new(InMemoryCheckpoints::new()),
        handler.clone(),
    )
    .store_retry(fast_store_retry())
    .spawn();
    let ended = tokio::time::timeout(WAIT, running.wait_until(|_| false))
        .await
        .unwrap();
    assert!(ended.is_err());
    let stats = running.stats();
    assert_eq!((stats.handled, stats.store_errors), (2, 0));
    let err = running.stop().await.unwrap_err();
    assert!(
        matches!(
            &err,
            RunnerError::Store {
                source: StoreError::Closed,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("the store is closed"), "{err}");
    assert_eq!(stats.error, Some(err.to_string()));
}

#[tokio::test]
async fn while_retrying_the_stats_show_the_error_and_a_stop_ends_the_wait() {
    let engine = memory_store();
    let flaky = Flaky::new(engine);
    place(&*flaky, &[("1", "A")]).await;
    flaky.break_subscription(0, network_error());

    let handler = Arc::new(Recorder::default());
    let mut running = HandlerRunner::new(
        flaky.clone(),
        Arc::new(InMemoryCheckpoints::new()),
        handler.clone(),
    )
    .store_retry(RetryPolicy::forever().initial_delay(Duration::from_secs(3600)))
    .spawn();
    let stats = tokio::time::timeout(WAIT, running.wait_until(|s| s.retrying.is_some()))
        .await
        .unwrap()
        .unwrap();
    let retrying = stats.retrying.unwrap();
    assert_eq!(retrying.attempt, 1);
    assert!(
        retrying.error.contains("connection reset"),
        "{}",
        retrying.error
    );
    assert_eq!((stats.store_errors, stats.handled), (1, 0));
    tokio::time::timeout(WAIT, running.stop())
        .await
        .expect("a stop does not wait out the hour")
        .unwrap();
}

#[tokio::test]
async fn a_restarted_runner_continues_from_its_checkpoint_and_dead_letters_can_be_replayed() {
    let store = memory_store();
    let checkpoints = Arc::new(StoreCheckpoints::new(store.clone()));
    let first = place(&*store, &[("1", "A"), ("2", "POISON"), ("3", "B")]).await;

    let handler = Arc::new(Recorder::default());
    let mut running = HandlerRunner::new(store.clone(), checkpoints.clone(), handler.clone())
        .retry(fast_retry(2))
        .batch_events_max(2)
        .spawn();
    tokio::time::timeout(WAIT, running.wait_for_checkpoint(first))
        .await
        .unwrap()
        .unwrap();
    running.stop().await.unwrap();
    assert_eq!(*handler.handled.lock(), ["1", "3"]);

    // A new runner (a restart) with the same checkpoint store handles only what is new.
    let then = place(&*store, &[("4", "C"), ("5", "D")]).await;
    let handler = Arc::new(Recorder::default());
    let runner = HandlerRunner::new(store.clone(), checkpoints.clone(), handler.clone())
        .retry(fast_retry(2));
    let mut running = HandlerRunner::new(store.clone(), checkpoints.clone(), handler.clone())
        .retry(fast_retry(2))
        .spawn();
    tokio::time::timeout(WAIT, running.wait_for_checkpoint(then))
        .await
        .unwrap()
        .unwrap();
    running.stop().await.unwrap();
    assert_eq!(*handler.handled.lock(), ["4", "5"]);

    // After a fix, replaying the dead letters runs the handler on the poison order; a second
    // replay has nothing left to do.
    handler
        .cured
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let report = runner.replay_dead_letters().await.unwrap();
    assert_eq!((report.replayed, report.failed_again), (1, 0));
    assert_eq!(handler.handled.lock().last().unwrap(), "2");
    let again = runner.replay_dead_letters().await.unwrap();
    assert_eq!((again.replayed, again.failed_again), (0, 0));
}

#[tokio::test]
async fn a_dead_letter_that_fails_again_is_written_again_with_the_attempts_added_up() {
    let store = memory_store();
    let last = place(&*store, &[("1", "POISON")]).await;
    let handler = Arc::new(Recorder::default());
    let runner = HandlerRunner::new(store.clone(), Arc::new(InMemoryCheckpoints::new()), handler)
        .retry(fast_retry(2));
    let checkpoints = Arc::new(InMemoryCheckpoints::new());
    let mut running = HandlerRunner::new(store.clone(), checkpoints, Arc::new(Recorder::default()))
        .retry(fast_retry(2))
        .spawn();
    tokio::time::timeout(WAIT, running.wait_for_checkpoint(last))
        .await
        .unwrap()
        .unwrap();
    running.stop().await.unwrap();
    let report = runner.replay_dead_letters().await.unwrap();
    assert_eq!((report.replayed, report.failed_again), (0, 1));
    let letters = DeadLetters::new(store).list("recorder").await.unwrap();
    let attempts: Vec<u32> = letters.iter().map(|l| l.attempts).collect();
    assert_eq!(attempts, [2, 4]);
}

#[tokio::test(start_paused = true)]
async fn the_idempotent_wrapper_skips_ids_it_has_seen_until_they_expire() {
    let ids = Arc::new(InMemoryProcessedIds::new(100));
    let inner = Arc::new(Recorder::default());
    let handler = Idempotent::new(inner.clone(), ids.clone(), Duration::from_secs(60));
    let first = envelope(placed("1", "A"));
    let second = envelope(placed("2", "B"));
    handler.handle(&first).await.unwrap();
    handler.handle(&first).await.unwrap(); // redelivered
    handler.handle(&second).await.unwrap();
    assert_eq!(*inner.handled.lock(), ["1", "2"]);
    assert!(ids.seen("recorder", first.id).await.unwrap());
    assert!(!ids.seen("another-consumer", first.id).await.unwrap());

    // A failure is not marked: the redelivery runs again.
    let poison = envelope(placed("3", "POISON"));
    assert!(handler.handle(&poison).await.is_err());
    assert!(!ids.seen("recorder", poison.id).await.unwrap());

    // After the time-to-live the id is forgotten.
    tokio::time::advance(Duration::from_secs(61)).await;
    handler.handle(&first).await.unwrap();
    assert_eq!(*inner.handled.lock(), ["1", "2", "1"]);
    assert_eq!(ids.len(), 1, "expired records are swept");
}

#[tokio::test]
async fn processed_ids_in_memory_are_bounded() {
    let ids = InMemoryProcessedIds::new(3);
    let all: Vec<_> = (0..5).map(|_| eventfold::core::EventId::new_v7()).collect();
    for id in &all {
        ids.mark("c", *id, Duration::from_secs(600)).await.unwrap();
    }
    assert_eq!(ids.len(), 3);
    assert!(
        !ids.seen("c", all[0]).await.unwrap(),
        "the oldest is evicted first"
    );
    assert!(ids.seen("c", all[4]).await.unwrap());
}

#[tokio::test]
async fn an_idempotent_handler_rerun_from_the_start_does_nothing_twice() {
    let store = memory_store();
    let last = place(&*store, &[("1", "A"), ("2", "B")]).await;
    let ids: Arc<dyn ProcessedIds> = Arc::new(InMemoryProcessedIds::new(1000));
    let inner = Arc::new(Recorder::default());
    for _ in 0..2 {
        // A fresh checkpoint store: every event is delivered again.
        let handler = Idempotent::new(inner.clone(), ids.clone(), Duration::from_secs(3600));
        let mut running =
            HandlerRunner::new(store.clone(), Arc::new(InMemoryCheckpoints::new()), handler)
                .spawn();
        let stats = tokio::time::timeout(WAIT, running.wait_for_checkpoint(last))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stats.handled, 2);
        running.stop().await.unwrap();
    }
    assert_eq!(*inner.handled.lock(), ["1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_server_consumer_group_the_poison_event_ends_parked_and_the_rest_is_acked() {
    let server = Server::start().await;
    let client = eventfold_client::Client::new(&server.url, None).unwrap();
    let (_, created) = client
        .put_group(
            "inventory",
            &serde_json::from_value::<eventfold_client::GroupSettings>(serde_json::json!({
                "filter": {"category": "order"},
                "start": "start",
                "max_deliveries": 3,
                "ack_timeout_ms": 10000,
                "retry_backoff": {"initial_ms": 5, "max_ms": 20, "multiplier": 2.0},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    assert!(created);
    place(
        &client,
        &[("1", "A"), ("2", "POISON"), ("3", "B"), ("4", "C")],
    )
    .await;

    let handler = Arc::new(Recorder::default());
    let (seen, observer) = observer();
    let mut running = GroupRunner::new(client.clone(), "inventory", handler.clone())
        .pull_wait(Duration::from_millis(200))
        .observer(observer)
        .spawn();
    tokio::time::timeout(
        WAIT,
        running.wait_until(|s| s.handled == 3 && s.failed_attempts == 3),
    )
    .await
    .unwrap()
    .unwrap();
    // The server parks the event after max_deliveries attempts.
    let parked = tokio::time::timeout(WAIT, async {
        loop {
            let page = client.group_parked("inventory", 10, None).await.unwrap();
            if !page.parked.is_empty() {
                return page.parked;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].attempts, 3);
    assert_eq!(parked[0].event.stream.as_str(), "order-2");
    assert!(
        parked[0].reason.contains("no stock record"),
        "{:?}",
        parked[0]
    );
    let mut handled = handler.handled.lock().clone();
    handled.sort();
    assert_eq!(handled, ["1", "3", "4"]);
    // The observer saw each delivery: three successes, the poison event's three attempts.
    let mut outcomes: Vec<(HandledOutcome, u32)> =
        seen.lock().iter().map(|(_, o, a, _)| (*o, *a)).collect();
    outcomes.sort_by_key(|&(o, a)| (o == HandledOutcome::Failed, a));
    use HandledOutcome::{Failed, Succeeded};
    assert_eq!(
        outcomes,
        [
            (Succeeded, 1),
            (Succeeded, 1),
            (Succeeded, 1),
            (Failed, 1),
            (Failed, 2),
            (Failed, 3)
        ]
    );

    // The rest was acked: nothing is in flight or left behind.
    let info = client.group_info("inventory").await.unwrap();
    assert_eq!(info.acked_total, 3, "{info:?}");
    assert_eq!(info.in_flight, 0, "{info:?}");
    running.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_handler_counts_failed_events_and_retries_in_the_framework_metrics() {
    let store = memory_store();
    let last = place(&*store, &[("1", "A"), ("2", "POISON"), ("3", "B")]).await;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = eventfold::FrameworkMetrics::new(&mut registry);
    // Every event fails its first attempt; the poison one fails all 3.
    let handler = Recorder {
        flaky: 1,
        ..Recorder::default()
    };
    let mut running = HandlerRunner::new(store, Arc::new(InMemoryCheckpoints::new()), handler)
        .retry(fast_retry(3))
        .observer(Arc::new(metrics))
        .spawn();
    running.wait_for_checkpoint(last).await.unwrap();
    running.stop().await.unwrap();
    let text = scrape(&registry);
    let series = |name: &str| {
        sample(
            &text,
            &format!("{name}{{consumer=\"recorder\",type=\"order.placed\"}}"),
        )
    };
    assert_eq!(
        series("eventfold_consumer_events_processed_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        series("eventfold_consumer_events_failed_total"),
        Some(1.0),
        "{text}"
    );
    // 1 retry for each of the two good events, 2 for the poison one.
    assert_eq!(
        sample(
            &text,
            "eventfold_consumer_retries_total{consumer=\"recorder\"}"
        ),
        Some(4.0),
        "{text}"
    );
    let count = |outcome: &str| {
        sample(
            &text,
            &format!(
                "eventfold_consumer_processing_duration_seconds_count{{consumer=\"recorder\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(count("succeeded"), Some(2.0), "{text}");
    assert_eq!(count("failed"), Some(1.0), "{text}");
}
