//! The relay on the in-memory store and broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use eventfold_core::{
    AllSlice, AppendCondition, AppendResult, DeleteMode, EventFilter, EventStore,
    EventSubscription, EventType, ExpectedRevision, ListStreams, NewEvent, Position, ReadAll,
    ReadStream, RecordedEvent, Revision, StoreError, StoreResult, StreamInfo, StreamList,
    StreamMetadata, StreamName, StreamSlice, SubscribeFrom,
};
use eventfold_memory::MemoryStore;
use eventfold_relay::{
    CHECKPOINT_EVENT_TYPE, CHECKPOINT_KEEP, Relay, RelayConfig, RelayError, RelayName, RelayState,
    read_checkpoint,
};
use eventfold_transport::{
    ConsumerGroup, DeadLetter, Features, MemoryTransport, Message, SubscribeSettings, Subscriber,
    Topic, Transport, TransportError, TransportResult,
};
use futures::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::{caught_up, check_per_stream_order, drain, fill};

fn topic() -> Topic {
    Topic::new("events").unwrap()
}

fn config(name: &str) -> RelayConfig {
    RelayConfig::new(RelayName::new(name).unwrap(), topic())
}

/// Runs `relay` in a task; the sender stops it.
fn spawn(relay: Relay) -> (oneshot::Sender<()>, JoinHandle<Result<(), RelayError>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

fn after(events: &[RecordedEvent]) -> Position {
    Position(events.last().expect("events").position.0 + 1)
}

fn ids(events: &[RecordedEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.to_string()).collect()
}

#[tokio::test]
async fn relays_everything_in_all_order_in_bounded_batches() {
    let store = Arc::new(MemoryStore::new());
    let broker = MemoryTransport::new();
    let written = fill(&*store, "order", 7, 1_234, 10).await;
    let relay = Relay::new(store.clone(), Arc::new(broker.clone()), config("all")).unwrap();
    let mut progress = relay.progress();
    let (stop, task) = spawn(relay);
    caught_up(&mut progress, after(&written)).await;
    // Events appended while it runs are relayed too.
    let more = fill(&*store, "invoice", 3, 300, 7).await;
    let user: Vec<RecordedEvent> = more
        .iter()
        .filter(|e| e.event_type.as_str() != CHECKPOINT_EVENT_TYPE)
        .cloned()
        .collect();
    caught_up(&mut progress, after(&user)).await;
    let p = progress.borrow().clone();
    assert_eq!(p.published, user.len() as u64);
    assert!(
        p.batches >= 4,
        "1,534 events take at least 4 batches of 500: {p:?}"
    );
    assert!(
        p.lag.is_some(),
        "the lag was measured after the first batch: {p:?}"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(progress.borrow().state, RelayState::Stopped);

    let received = drain(&broker, &topic(), "check", user.len()).await;
    // Exactly once here (no failure), in `$all` order, and none of the relay's own events.
    assert_eq!(ids(&received), ids(&user));
    assert!(
        received
            .iter()
            .all(|e| e.event_type.as_str() != CHECKPOINT_EVENT_TYPE)
    );
    // The checkpoint stream is bounded by its max-count.
    let name = RelayName::new("all").unwrap();
    let info = store.stream_info(&name.checkpoint_stream()).await.unwrap();
    assert_eq!(info.metadata.max_count, Some(CHECKPOINT_KEEP));
    assert!(info.event_count <= CHECKPOINT_KEEP);
    assert!(read_checkpoint(&*store, &name).await.unwrap().unwrap() >= after(&user));
}

#[tokio::test]
async fn a_filter_relays_only_the_matching_events() {
    let store = Arc::new(MemoryStore::new());
    let broker = MemoryTransport::new();
    fill(&*store, "order", 3, 200, 5).await;
    fill(&*store, "invoice", 3, 200, 5).await;
    let all = crate::support::read_all(&*store).await;
    let filter = EventFilter {
        types: vec![EventType::new("type.a").unwrap()],
        category: Some("order".into()),
        ..EventFilter::default()
    };
    let wanted: Vec<RecordedEvent> = all
        .iter()
        .filter(|e| filter.matches_event(e))
        .cloned()
        .collect();
    assert!(!wanted.is_empty() && wanted.len() < all.len());
    let relay = Relay::new(
        store.clone(),
        Arc::new(broker.clone()),
        config("orders").filter(filter),
    )
    .unwrap();
    let mut progress = relay.progress();
    let (stop, task) = spawn(relay);
    caught_up(&mut progress, after(&wanted)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let received = drain(&broker, &topic(), "check", wanted.len()).await;
    assert_eq!(ids(&received), ids(&wanted));
    assert_eq!(progress.borrow().published, wanted.len() as u64);
}

#[tokio::test]
async fn a_restarted_relay_resumes_from_its_checkpoint() {
    let store = Arc::new(MemoryStore::new());
    let broker = MemoryTransport::new();
    let first = fill(&*store, "order", 4, 700, 10).await;
    let relay = Relay::new(store.clone(), Arc::new(broker.clone()), config("r")).unwrap();
    let mut progress = relay.progress();
    let (stop, task) = spawn(relay);
    caught_up(&mut progress, after(&first)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let checkpoint = read_checkpoint(&*store, &RelayName::new("r").unwrap())
        .await
        .unwrap()
        .expect("a checkpoint");
    assert!(checkpoint >= after(&first));

    // Written while no relay runs, then a new relay with the same name.
    let all = fill(&*store, "order", 4, 500, 10).await;
    let second: Vec<RecordedEvent> = all
        .iter()
        .filter(|e| e.position >= checkpoint && e.event_type.as_str() != CHECKPOINT_EVENT_TYPE)
        .cloned()
        .collect();
    assert_eq!(second.len(), 500);
    let relay = Relay::new(store.clone(), Arc::new(broker.clone()), config("r")).unwrap();
    let mut progress = relay.progress();
    let (stop, task) = spawn(relay);
    caught_up(&mut progress, after(&second)).await;
    // It started at its checkpoint: nothing of the first run was published again.
    assert_eq!(progress.borrow().published, 500);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    let received = drain(&broker, &topic(), "check", 1_200).await;
    let expected: Vec<RecordedEvent> = first.iter().chain(&second).cloned().collect();
    assert_eq!(ids(&received), ids(&expected));
}

/// How [`Flaky`] fails.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Fails before publishing anything, as unavailable.
    Unavailable,
    /// Publishes the first half of the batch, then fails as unavailable.
    Partial,
    /// Refuses, not retryable.
    Rejected,
}

/// A [`MemoryTransport`] whose next `failures` publishes fail as `mode` says.
struct Flaky {
    inner: MemoryTransport,
    failures: AtomicU32,
    attempts: AtomicU32,
    mode: Mode,
}

#[async_trait::async_trait]
impl Transport for Flaky {
    fn broker(&self) -> &'static str {
        "flaky"
    }

    fn features(&self) -> Features {
        self.inner.features()
    }

    async fn publish(&self, topic: &Topic, messages: &[Message]) -> TransportResult<()> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !fail {
            return self.inner.publish(topic, messages).await;
        }
        match self.mode {
            Mode::Unavailable => {}
            Mode::Partial => {
                self.inner
                    .publish(topic, &messages[..messages.len() / 2])
                    .await?
            }
            Mode::Rejected => {
                return Err(TransportError::Rejected {
                    broker: "flaky",
                    action: "publish",
                    detail: "message too large".into(),
                });
            }
        }
        Err(TransportError::Unavailable {
            broker: "flaky",
            url: "memory://".into(),
            detail: "connection reset".into(),
        })
    }

    async fn subscribe(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        settings: &SubscribeSettings,
    ) -> TransportResult<Box<dyn Subscriber>> {
        self.inner.subscribe(topic, group, settings).await
    }

    async fn dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<Vec<DeadLetter>> {
        self.inner.dead_letters(topic, group, max).await
    }

    async fn replay_dead_letters(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        max: usize,
    ) -> TransportResult<usize> {
        self.inner.replay_dead_letters(topic, group, max).await
    }
}

fn flaky(failures: u32, mode: Mode) -> Arc<Flaky> {
    Arc::new(Flaky {
        inner: MemoryTransport::new(),
        failures: AtomicU32::new(failures),
        attempts: AtomicU32::new(0),
        mode,
    })
}

#[tokio::test(start_paused = true)]
async fn broker_failures_are_retried_and_nothing_is_lost_or_reordered() {
    let store = Arc::new(MemoryStore::new());
    let written = fill(&*store, "order", 5, 1_000, 10).await;
    let broker = flaky(6, Mode::Unavailable);
    let mut cfg = config("flaky");
    cfg.batch_events_max = 100;
    let relay = Relay::new(store.clone(), broker.clone(), cfg).unwrap();
    let mut progress = relay.progress();
    let (stop, task) = spawn(relay);
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        progress.wait_for(|p| matches!(p.state, RelayState::Retrying { attempts: 3, .. })),
    )
    .await
    .expect("the relay reports its retries")
    .unwrap();
    caught_up(&mut progress, after(&written)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(broker.attempts.load(Ordering::SeqCst), 10 + 6);
    let received = drain(&broker.inner, &topic(), "check", written.len()).await;
    assert_eq!(ids(&received), ids(&written));
}

#[tokio::test(start_paused = true)]
async fn a_batch_half_published_before_a_failure_is_published_again_without_a_gap() {
    let store = Arc::new(MemoryStore::new());
    let written = fill(&*store, "order", 5, 1_000, 10).await;
    let broker = flaky(3, Mode::Partial);
    let mut cfg = config("partial");
    cfg.batch_events_max = 100;
    let relay = Relay::new(store.clone(), broker.clone(), cfg).unwrap();
    let mut progress = relay.progress();
    let (stop, task) = spawn(relay);
    caught_up(&mut progress, after(&written)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    // Three halves of 100-event batches came twice.
    let received = drain(&broker.inner, &topic(), "check", written.len() + 150).await;
    check_per_stream_order(&written, &received);
    let mut first_seen = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for e in &received {
        if seen.insert(e.id) {
            first_seen.push(e.clone());
        }
    }
    assert_eq!(ids(&first_seen), ids(&written));
}

#[tokio::test(start_paused = true)]
async fn a_refusal_stops_the_relay_with_the_error_and_its_checkpoint_kept() {
    let store = Arc::new(MemoryStore::new());
    fill(&*store, "order", 2, 10, 5).await;
    let broker = flaky(1, Mode::Rejected);
    let relay = Relay::new(store.clone(), broker.clone(), config("refused")).unwrap();
    let progress = relay.progress();
    let (_stop, task) = spawn(relay);
    let err = task.await.unwrap().expect_err("a refusal is not retried");
    assert!(matches!(err, RelayError::Transport(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("message too large") && text.contains("restart"),
        "{text}"
    );
    assert!(matches!(progress.borrow().state, RelayState::Failed(_)));
    assert_eq!(
        read_checkpoint(&*store, &RelayName::new("refused").unwrap())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn retries_give_up_after_max_attempts_when_set() {
    let store = Arc::new(MemoryStore::new());
    fill(&*store, "order", 2, 10, 5).await;
    let broker = flaky(100, Mode::Unavailable);
    let mut cfg = config("bounded");
    cfg.retry.max_attempts = Some(4);
    let relay = Relay::new(store.clone(), broker.clone(), cfg).unwrap();
    let err = relay
        .run(std::future::pending())
        .await
        .expect_err("gives up");
    assert!(
        matches!(err, RelayError::GaveUp { attempts: 4, .. }),
        "{err:?}"
    );
    assert_eq!(broker.attempts.load(Ordering::SeqCst), 4);
}

#[test]
fn bad_settings_are_refused_with_what_to_do() {
    let err = RelayName::new("has space").unwrap_err().to_string();
    assert!(err.contains("letters, digits"), "{err}");
    let mut cfg = config("x");
    cfg.batch_events_max = 501;
    let err = Relay::new(
        Arc::new(MemoryStore::new()),
        Arc::new(MemoryTransport::new()),
        cfg,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("1..=500"), "{err}");
}

/// A [`MemoryStore`] that fails for now: the first `cut_subscriptions` `$all` subscriptions end
/// with `Unavailable` after `cut_after` events, and the first `failed_appends` appends fail as
/// `Unavailable`, or, with `broken`, every subscription fails at once as corrupt.
struct FlakyStore {
    inner: MemoryStore,
    cut_subscriptions: AtomicU32,
    cut_after: usize,
    failed_appends: AtomicU32,
    broken: bool,
}

fn unavailable() -> StoreError {
    StoreError::Unavailable {
        detail: "connection reset".into(),
        outcome_unknown: false,
    }
}

fn take_one(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[async_trait::async_trait]
impl EventStore for FlakyStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        if take_one(&self.failed_appends) {
            return Err(unavailable());
        }
        self.inner.append(stream, expected, events).await
    }

    async fn append_with_condition(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> StoreResult<AppendResult> {
        self.inner
            .append_with_condition(stream, expected, events, condition)
            .await
    }

    async fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice> {
        self.inner.read_stream(stream, read).await
    }

    async fn read_all(&self, read: ReadAll) -> StoreResult<AllSlice> {
        self.inner.read_all(read).await
    }

    fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: SubscribeFrom<Revision>,
    ) -> EventSubscription {
        self.inner.subscribe_stream(stream, from)
    }

    fn subscribe_all(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
    ) -> EventSubscription {
        if self.broken {
            let e = StoreError::Corrupt {
                file: "log".into(),
                offset: 0,
                detail: "bad checksum".into(),
            };
            return futures::stream::iter([Err(e)]).boxed();
        }
        let sub = self.inner.subscribe_all(from, filter);
        if take_one(&self.cut_subscriptions) {
            return sub
                .take(self.cut_after)
                .chain(futures::stream::iter([Err(unavailable())]))
                .boxed();
        }
        sub
    }

    async fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo> {
        self.inner.stream_info(stream).await
    }

    async fn list_streams(&self, list: ListStreams) -> StoreResult<StreamList> {
        self.inner.list_streams(list).await
    }

    async fn get_metadata(&self, stream: &StreamName) -> StoreResult<StreamMetadata> {
        self.inner.get_metadata(stream).await
    }

    async fn set_metadata(&self, stream: &StreamName, metadata: StreamMetadata) -> StoreResult<()> {
        self.inner.set_metadata(stream, metadata).await
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    ) -> StoreResult<()> {
        self.inner.delete_stream(stream, expected, mode).await
    }
}

fn flaky_store(cut_subscriptions: u32, failed_appends: u32, broken: bool) -> Arc<FlakyStore> {
    Arc::new(FlakyStore {
        inner: MemoryStore::new(),
        cut_subscriptions: AtomicU32::new(cut_subscriptions),
        cut_after: 150,
        failed_appends: AtomicU32::new(failed_appends),
        broken,
    })
}

#[tokio::test(start_paused = true)]
async fn store_failures_are_retried_from_the_last_confirmed_batch() {
    let store = flaky_store(3, 0, false);
    let written = fill(&store.inner, "order", 5, 1_000, 10).await;
    // The relay's checkpoint appends fail 4 times in all.
    store.failed_appends.store(4, Ordering::SeqCst);
    let broker = MemoryTransport::new();
    let mut cfg = config("store");
    cfg.batch_events_max = 100;
    let relay = Relay::new(store.clone(), Arc::new(broker.clone()), cfg).unwrap();
    let mut progress = relay.progress();
    let (stop, task) = spawn(relay);
    caught_up(&mut progress, after(&written)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(store.cut_subscriptions.load(Ordering::SeqCst), 0);
    assert_eq!(store.failed_appends.load(Ordering::SeqCst), 0);
    // A subscription cut mid-batch is resumed after the last published batch: exactly once.
    let received = drain(&broker, &topic(), "check", written.len()).await;
    assert_eq!(ids(&received), ids(&written));
    assert_eq!(progress.borrow().published, written.len() as u64);
}

#[tokio::test]
async fn a_store_error_that_will_not_pass_stops_the_relay() {
    let store = flaky_store(0, 0, true);
    fill(&store.inner, "order", 2, 10, 5).await;
    let relay = Relay::new(store, Arc::new(MemoryTransport::new()), config("corrupt")).unwrap();
    let err = relay.run(std::future::pending()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RelayError::Store {
                error: StoreError::Corrupt { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("eventfold verify"), "{err}");
}

#[tokio::test]
async fn an_unusable_checkpoint_stream_stops_the_relay_and_says_how_to_start_over() {
    let store = Arc::new(MemoryStore::new());
    let name = RelayName::new("odd").unwrap();
    store
        .append(
            &name.checkpoint_stream(),
            ExpectedRevision::Any,
            vec![NewEvent::json(
                EventType::new("something.else").unwrap(),
                &serde_json::json!({}),
            )],
        )
        .await
        .unwrap();
    let relay = Relay::new(store, Arc::new(MemoryTransport::new()), config("odd")).unwrap();
    let err = relay.run(std::future::pending()).await.unwrap_err();
    assert!(matches!(err, RelayError::Checkpoint { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("relay-checkpoint-odd") && text.contains("delete"),
        "{text}"
    );
}
