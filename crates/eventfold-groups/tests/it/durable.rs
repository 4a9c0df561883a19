//! What a group records of failed attempts and parks survives restarts and crashes: a poison
//! event gets `max_deliveries` attempts in total however often the server restarts, and a crash
//! between the two appends of a park leaves one parked entry, not two.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventfold_core::{
    AllSlice, AppendCondition, AppendResult, DeleteMode, EventFilter, EventStore,
    EventSubscription, ExpectedRevision, ListStreams, NewEvent, Position, ReadAll, ReadStream,
    Revision, StoreError, StoreResult, StreamInfo, StreamList, StreamMetadata, StreamName,
    StreamSlice, SubscribeFrom,
};
use eventfold_groups::{GroupName, NackAction};
use eventfold_memory::MemoryStore;

use crate::{Env, Stores, backoff, config, group, ids};

/// Stops the groups and opens them again over `state` (the same source).
async fn reopen(env: Env, state: Arc<dyn EventStore>) -> Env {
    env.groups.shutdown().await;
    drop(env.groups);
    Env::over(env.source, state, Stores::Memory).await
}

/// The parked entries of `g` not yet replayed: (position, attempts).
async fn parked(env: &Env, g: &GroupName) -> Vec<(u64, u32)> {
    let page = env.groups.parked(g, None, 100).await.unwrap();
    page.parked
        .iter()
        .map(|p| (p.position, p.attempts))
        .collect()
}

/// Yields until the group's state store holds `n` records of `kind` in its acks stream (a
/// record the timer task writes).
async fn recorded(env: &Env, g: &str, kind: &str, n: usize) {
    let stream = StreamName::new(format!("group-{g}-acks")).unwrap();
    for _ in 0..100_000 {
        let count = match env
            .state
            .read_stream(&stream, ReadStream::forward(1000))
            .await
        {
            Ok(s) => s
                .events
                .iter()
                .filter(|e| e.event_type.as_str() == kind)
                .count(),
            Err(_) => 0,
        };
        if count >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("no {n} `{kind}` records in {stream}");
}

/// A poison event nacked with `retry` once per server run: after a restart the next delivery
/// is the next attempt, and the third failure (of `max_deliveries` 3) parks it. Before failed
/// attempts were recorded, each run started over at attempt 1 and it was never parked.
#[tokio::test(start_paused = true)]
async fn retry_nacks_count_across_restarts() {
    let mut env = Env::memory().await;
    let poison = env.append("order-1", "poison", 1).await[0];
    let g = group("g");
    env.groups
        .put(
            &g,
            config(|c| {
                c.max_deliveries = 3;
                c.retry_backoff = backoff(0, 1.0, 0);
            }),
        )
        .await
        .unwrap();
    let mut attempts = Vec::new();
    for _ in 0..6 {
        let ds = env.pull(&g, "c", 10, 1000).await;
        if ds.is_empty() {
            break;
        }
        assert_eq!(ds.len(), 1);
        assert_eq!(ds[0].event.position.0, poison);
        attempts.push(ds[0].attempt);
        env.groups
            .nack(&g, &ids(&ds), NackAction::Retry, "bad")
            .await
            .unwrap();
        env = env.restart().await;
    }
    assert_eq!(
        attempts,
        vec![1, 2, 3],
        "one attempt per run, counted across runs"
    );
    assert_eq!(parked(&env, &g).await, vec![(poison, 3)]);
    assert_eq!(env.groups.info(&g).await.unwrap().parked, 1);
    env.close().await;
}

/// The same with ack timeouts: a delivery left unacknowledged counts as a failed attempt that
/// survives a restart, and the second timeout (of `max_deliveries` 2) parks the event.
#[tokio::test(start_paused = true)]
async fn ack_timeouts_count_across_restarts() {
    let mut env = Env::memory().await;
    let poison = env.append("order-1", "poison", 1).await[0];
    let g = group("g");
    env.groups
        .put(
            &g,
            config(|c| {
                c.max_deliveries = 2;
                c.ack_timeout_ms = 1000;
                c.retry_backoff = backoff(0, 1.0, 0);
            }),
        )
        .await
        .unwrap();
    let mut attempts = Vec::new();
    for run in 1..=4 {
        let ds = env.pull(&g, "c", 10, 1000).await;
        if ds.is_empty() {
            break;
        }
        attempts.push(ds[0].attempt);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if env.groups.info(&g).await.unwrap().parked > 0 {
            break;
        }
        recorded(&env, "g", "retried", run).await;
        env = env.restart().await;
    }
    assert_eq!(attempts, vec![1, 2], "timeouts counted across runs");
    assert_eq!(parked(&env, &g).await, vec![(poison, 2)]);
    env.close().await;
}

/// A state store that "crashes" after the first append to a parked stream once armed: every
/// later append to an acks stream fails, as if the process died between the two appends of a
/// park.
struct CrashBetweenParkAppends {
    inner: Arc<MemoryStore>,
    armed: AtomicBool,
    crashed: AtomicBool,
}

#[async_trait::async_trait]
impl EventStore for CrashBetweenParkAppends {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        if self.crashed.load(Ordering::SeqCst) && stream.as_str().ends_with("-acks") {
            return Err(StoreError::Poisoned {
                cause: "crashed between the appends of a park (test)".into(),
            });
        }
        let r = self.inner.append(stream, expected, events).await;
        if self.armed.load(Ordering::SeqCst) && stream.as_str().starts_with("parked-") {
            self.crashed.store(true, Ordering::SeqCst);
        }
        r
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
        self.inner.subscribe_all(from, filter)
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

/// Groups over a state store that crashes between the two appends of the next park.
async fn crashing_env() -> (Env, Arc<CrashBetweenParkAppends>, Arc<MemoryStore>) {
    let inner = Arc::new(MemoryStore::new());
    let crashing = Arc::new(CrashBetweenParkAppends {
        inner: inner.clone(),
        armed: AtomicBool::new(false),
        crashed: AtomicBool::new(false),
    });
    let source: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let env = Env::over(source, crashing.clone(), Stores::Memory).await;
    (env, crashing, inner)
}

/// After the restart the interrupted park is completed: one parked entry, and the event is
/// not delivered again (before, it was delivered again, and parking it again made two entries).
async fn check_parked_once(env: Env, g: &GroupName, poison: u64, attempts: u32) {
    let again = env.pull(g, "c", 10, 1000).await;
    if !again.is_empty() {
        // What a consumer would do with the poison event again.
        env.groups
            .nack(g, &ids(&again), NackAction::Park, "bad")
            .await
            .unwrap();
    }
    assert_eq!(parked(&env, g).await, vec![(poison, attempts)]);
    assert!(again.is_empty(), "the parked event was delivered again");
    let info = env.groups.info(g).await.unwrap();
    assert_eq!((info.parked, info.unsettled), (1, 0));
    // And it stays so across one more restart.
    let env = env.restart().await;
    assert_eq!(parked(&env, g).await, vec![(poison, attempts)]);
    assert!(env.pull(g, "c", 10, 1000).await.is_empty());
    env.close().await;
}

/// A nack `park` whose `settled` record never lands (the process dies after the parked copy).
#[tokio::test(start_paused = true)]
async fn a_crash_between_the_appends_of_a_nack_park_parks_once() {
    let (env, crashing, inner) = crashing_env().await;
    let poison = env.append("order-1", "poison", 1).await[0];
    let g = group("g");
    env.groups.put(&g, config(|_| {})).await.unwrap();
    let ds = env.pull(&g, "c", 10, 1000).await;
    assert_eq!(ds.len(), 1);
    crashing.armed.store(true, Ordering::SeqCst);
    let crashed = env
        .groups
        .nack(&g, &ids(&ds), NackAction::Park, "bad")
        .await;
    assert!(crashed.is_err(), "the second append failed: {crashed:?}");
    let env = reopen(env, inner).await;
    check_parked_once(env, &g, poison, 1).await;
}

/// The same when the park comes from the last failed attempt of a nack `retry`.
#[tokio::test(start_paused = true)]
async fn a_crash_between_the_appends_of_a_retry_park_parks_once() {
    let (env, crashing, inner) = crashing_env().await;
    let poison = env.append("order-1", "poison", 1).await[0];
    let g = group("g");
    env.groups
        .put(
            &g,
            config(|c| {
                c.max_deliveries = 2;
                c.retry_backoff = backoff(0, 1.0, 0);
            }),
        )
        .await
        .unwrap();
    let ds = env.pull(&g, "c", 10, 1000).await;
    env.groups
        .nack(&g, &ids(&ds), NackAction::Retry, "bad")
        .await
        .unwrap();
    let ds = env.pull(&g, "c", 10, 1000).await;
    assert_eq!(ds[0].attempt, 2);
    crashing.armed.store(true, Ordering::SeqCst);
    let crashed = env
        .groups
        .nack(&g, &ids(&ds), NackAction::Retry, "bad")
        .await;
    assert!(crashed.is_err(), "the second append failed: {crashed:?}");
    // Until the restart the event is not delivered again either.
    assert!(env.pull(&g, "c", 10, 1000).await.is_empty());
    let env = reopen(env, inner).await;
    check_parked_once(env, &g, poison, 2).await;
}

/// A store that fails the `settled` record of a park for a while, then works again: the park
/// is recorded in the background, the event is never delivered again meanwhile.
#[tokio::test(start_paused = true)]
async fn a_park_whose_record_failed_is_recorded_later() {
    let (env, crashing, _inner) = crashing_env().await;
    let poison = env.append("order-1", "poison", 1).await[0];
    let g = group("g");
    env.groups.put(&g, config(|_| {})).await.unwrap();
    let ds = env.pull(&g, "c", 10, 1000).await;
    crashing.armed.store(true, Ordering::SeqCst);
    assert!(
        env.groups
            .nack(&g, &ids(&ds), NackAction::Park, "bad")
            .await
            .is_err()
    );
    assert!(env.pull(&g, "c", 10, 3000).await.is_empty());
    crashing.armed.store(false, Ordering::SeqCst);
    crashing.crashed.store(false, Ordering::SeqCst);
    for _ in 0..10 {
        if env.groups.info(&g).await.unwrap().parked == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(parked(&env, &g).await, vec![(poison, 1)]);
    check_parked_once(env, &g, poison, 1).await;
}
