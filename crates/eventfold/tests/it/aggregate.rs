//! Aggregates through the repository, on the embedded engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use eventfold::core::{
    ContentType, EventStore, EventSubscription, EventType, ExpectedRevision, NewEvent, ReadStream,
    RecordedEvent, Revision, StoreError, StreamMetadata, StreamName,
};
use eventfold::testing::AggregateTest;
use eventfold::{
    Aggregate, Codec, CodecError, Context, DomainEvent, Executed, Repository, RepositoryError,
    SNAPSHOT_EVENT_TYPE, SnapshotAggregate, SnapshotPolicy, Upcasters,
};
use serde::{Deserialize, Serialize};

use crate::support::{io_error, memory_store, stream};

// ---- the aggregate under test: stock of one product ----

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Received {
    quantity: u64,
}

/// Version 1 of `stock.received`, before it was renamed.
#[derive(Deserialize)]
struct ReceivedV1 {
    qty: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Reserved {
    quantity: u64,
    order: String,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "stock.")]
enum StockEvent {
    #[event(version = 2)]
    Received(Received),
    Reserved(Reserved),
}

#[derive(Clone, Debug, PartialEq)]
enum StockCommand {
    Receive { quantity: u64 },
    Reserve { quantity: u64, order: String },
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum StockError {
    #[error("cannot reserve {requested}: only {available} available")]
    OutOfStock { requested: u64, available: u64 },
    #[error("a quantity must be at least 1")]
    ZeroQuantity,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Stock {
    available: u64,
    reserved: u64,
}

fn decide(available: u64, command: StockCommand) -> Result<Vec<StockEvent>, StockError> {
    match command {
        StockCommand::Receive { quantity: 0 } | StockCommand::Reserve { quantity: 0, .. } => {
            Err(StockError::ZeroQuantity)
        }
        StockCommand::Receive { quantity } => Ok(vec![StockEvent::Received(Received { quantity })]),
        StockCommand::Reserve { quantity, .. } if quantity > available => {
            Err(StockError::OutOfStock {
                requested: quantity,
                available,
            })
        }
        StockCommand::Reserve { quantity, order } => {
            Ok(vec![StockEvent::Reserved(Reserved { quantity, order })])
        }
    }
}

/// How both versions of the state count stock.
fn count(available: &mut u64, reserved: &mut u64, event: &StockEvent) {
    match event {
        StockEvent::Received(r) => *available += r.quantity,
        StockEvent::Reserved(r) => {
            *available -= r.quantity;
            *reserved += r.quantity;
        }
    }
}

impl Aggregate for Stock {
    const CATEGORY: &'static str = "stock";
    type Event = StockEvent;
    type Command = StockCommand;
    type Error = StockError;

    fn apply(&mut self, event: &StockEvent) {
        count(&mut self.available, &mut self.reserved, event);
    }

    fn handle(&self, command: StockCommand) -> Result<Vec<StockEvent>, StockError> {
        decide(self.available, command)
    }
}

impl SnapshotAggregate for Stock {
    const SNAPSHOT_VERSION: u32 = 1;
}

/// The next version of the state: it also counts deliveries. A version-1 snapshot would
/// deserialize into it (`deliveries` has a default) and be wrong, so the version was bumped.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct StockV2 {
    available: u64,
    reserved: u64,
    #[serde(default)]
    deliveries: u64,
}

impl Aggregate for StockV2 {
    const CATEGORY: &'static str = "stock";
    type Event = StockEvent;
    type Command = StockCommand;
    type Error = StockError;

    fn apply(&mut self, event: &StockEvent) {
        count(&mut self.available, &mut self.reserved, event);
        if let StockEvent::Received(_) = event {
            self.deliveries += 1;
        }
    }

    fn handle(&self, command: StockCommand) -> Result<Vec<StockEvent>, StockError> {
        decide(self.available, command)
    }
}

impl SnapshotAggregate for StockV2 {
    const SNAPSHOT_VERSION: u32 = 2;
}

fn receive(quantity: u64) -> StockCommand {
    StockCommand::Receive { quantity }
}

fn reserve(quantity: u64, order: &str) -> StockCommand {
    StockCommand::Reserve {
        quantity,
        order: order.into(),
    }
}

/// The events of stream `name` (the first 10).
async fn read(store: &dyn EventStore, name: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(&stream(name), ReadStream::forward(10))
        .await
        .unwrap()
        .events
}

type Outcome = Result<Executed<Stock>, RepositoryError<StockError>>;

/// `sku-1` with 10 in stock, then two reservations racing: both load revision 0 before either
/// appends. A repository on the plain store, and the two outcomes.
async fn race_two_reservations(a: u64, b: u64) -> (Repository<Stock>, Outcome, Outcome) {
    let engine = memory_store();
    let setup = Repository::<Stock>::new(engine.clone());
    setup
        .execute("sku-1", receive(10), &Context::new())
        .await
        .unwrap();
    let repo = Repository::<Stock>::new(Racing::new(engine.clone(), 2, false));
    let ctx = Context::new();
    let (ra, rb) = tokio::join!(
        repo.execute("sku-1", reserve(a, "o-a"), &ctx),
        repo.execute("sku-1", reserve(b, "o-b"), &ctx),
    );
    (setup, ra, rb)
}

// ---- the given/when/then harness ----

#[test]
fn the_harness_checks_events_errors_and_state() {
    AggregateTest::<Stock>::given([StockEvent::Received(Received { quantity: 5 })])
        .when(reserve(3, "o-1"))
        .then([StockEvent::Reserved(Reserved {
            quantity: 3,
            order: "o-1".into(),
        })])
        .then_state(Stock {
            available: 2,
            reserved: 3,
        });

    AggregateTest::<Stock>::given([StockEvent::Received(Received { quantity: 5 })])
        .when(reserve(6, "o-1"))
        .then_error(StockError::OutOfStock {
            requested: 6,
            available: 5,
        });

    AggregateTest::<Stock>::given_no_events()
        .when(receive(0))
        .then_error_matches(|e| matches!(e, StockError::ZeroQuantity));
}

#[test]
fn the_harness_reports_a_mismatch_with_both_sides() {
    let panic = std::panic::catch_unwind(|| {
        AggregateTest::<Stock>::given_no_events()
            .when(receive(2))
            .then([StockEvent::Received(Received { quantity: 3 })]);
    })
    .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("first difference at [0]"), "{message}");
    assert!(message.contains("quantity: 3"), "{message}");
    assert!(message.contains("quantity: 2"), "{message}");
}

// ---- the repository ----

#[tokio::test]
async fn execute_appends_and_load_rebuilds() {
    let store = memory_store();
    let repo = Repository::<Stock>::new(store.clone());
    let ctx = Context::new();

    let first = repo.execute("sku-1", receive(10), &ctx).await.unwrap();
    assert_eq!(first.revision, Some(Revision(0)));
    assert_eq!(first.attempts, 1);
    assert_eq!(first.state.available, 10);
    let second = repo
        .execute("sku-1", reserve(4, "o-1"), &ctx)
        .await
        .unwrap();
    assert_eq!(second.revision, Some(Revision(1)));
    assert_eq!(
        second.events,
        [StockEvent::Reserved(Reserved {
            quantity: 4,
            order: "o-1".into()
        })]
    );

    let loaded = repo.load("sku-1").await.unwrap();
    assert_eq!(
        loaded.state,
        Stock {
            available: 6,
            reserved: 4
        }
    );
    assert_eq!(loaded.revision, Some(Revision(1)));
    assert_eq!(loaded.events_applied, 2);

    // A rejected command writes nothing.
    let err = repo
        .execute("sku-1", reserve(7, "o-2"), &ctx)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RepositoryError::Rejected(StockError::OutOfStock {
                requested: 7,
                available: 6
            })
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "cannot reserve 7: only 6 available");
    let info = store.stream_info(&stream("stock-sku-1")).await.unwrap();
    assert_eq!(info.last_revision, Revision(1));

    // An unknown aggregate is the default state with no revision.
    let fresh = repo.load("sku-2").await.unwrap();
    assert_eq!(fresh.state, Stock::default());
    assert_eq!(fresh.revision, None);
}

#[tokio::test]
async fn past_states_by_revision_and_by_time() {
    let store = memory_store();
    let repo = Repository::<Stock>::new(store.clone()).with_snapshots(SnapshotPolicy::every(2));
    let ctx = Context::new();
    repo.execute("sku-1", receive(10), &ctx).await.unwrap();
    repo.execute("sku-1", reserve(3, "o-1"), &ctx)
        .await
        .unwrap();
    let between = eventfold::core::Timestamp::now();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    repo.execute("sku-1", reserve(5, "o-2"), &ctx)
        .await
        .unwrap();
    repo.execute("sku-1", receive(1), &ctx).await.unwrap();

    let at_first = repo.load_at_revision("sku-1", Revision(0)).await.unwrap();
    assert_eq!(at_first.state.available, 10);
    assert_eq!(at_first.revision, Some(Revision(0)));

    let then = repo.load_as_of("sku-1", between).await.unwrap();
    assert_eq!(then.state.available, 7);
    assert_eq!(then.revision, Some(Revision(1)));

    let before_anything = repo
        .load_as_of("sku-1", eventfold::core::Timestamp(0))
        .await
        .unwrap();
    assert_eq!(before_anything.revision, None);

    assert_eq!(repo.load("sku-1").await.unwrap().state.available, 3);
}

#[tokio::test]
async fn correlation_ids_of_the_context_land_in_every_event() {
    let store = memory_store();
    let repo = Repository::<Stock>::new(store.clone());
    let ctx = Context::with_correlation_id("req-42").user("alice");
    repo.execute("sku-1", receive(1), &ctx).await.unwrap();
    repo.execute("sku-1", receive(2), &ctx).await.unwrap();

    let events = read(&*store, "stock-sku-1").await;
    assert_eq!(events.len(), 2);
    for e in events {
        assert_eq!(e.metadata["correlation_id"], "req-42");
        assert_eq!(e.metadata["causation_id"], "req-42");
        assert_eq!(e.metadata["user_id"], "alice");
    }
}

/// The embedded engine with a rival writer: the first `hold` reads of aggregate streams wait
/// for each other (so concurrent commands all load the same revision), and with `rival` set
/// every append to an aggregate stream is preceded by another writer's append.
struct Racing {
    inner: Arc<dyn EventStore>,
    hold: usize,
    barrier: tokio::sync::Barrier,
    reads: AtomicUsize,
    rival: bool,
    /// Whether the next append fails with an I/O error (without writing).
    fail_append: std::sync::atomic::AtomicBool,
}

impl Racing {
    fn new(inner: Arc<dyn EventStore>, hold: usize, rival: bool) -> Arc<Self> {
        Arc::new(Racing {
            inner,
            hold,
            barrier: tokio::sync::Barrier::new(hold.max(1)),
            reads: AtomicUsize::new(0),
            rival,
            fail_append: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

#[async_trait::async_trait]
impl EventStore for Racing {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> eventfold::core::StoreResult<eventfold::core::AppendResult> {
        if self.fail_append.swap(false, Ordering::SeqCst) {
            return Err(io_error());
        }
        if self.rival && stream.category() == "stock" {
            let rival = eventfold::encode_event(
                &StockEvent::Received(Received { quantity: 1 }),
                Codec::Json,
                &Context::new(),
            )
            .unwrap();
            self.inner
                .append(stream, ExpectedRevision::Any, vec![rival])
                .await?;
        }
        self.inner.append(stream, expected, events).await
    }

    async fn append_with_condition(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: eventfold::core::AppendCondition,
    ) -> eventfold::core::StoreResult<eventfold::core::AppendResult> {
        self.inner
            .append_with_condition(stream, expected, events, condition)
            .await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        read: ReadStream,
    ) -> eventfold::core::StoreResult<eventfold::core::StreamSlice> {
        let slice = self.inner.read_stream(stream, read).await;
        if stream.category() == "stock" && self.reads.fetch_add(1, Ordering::SeqCst) < self.hold {
            self.barrier.wait().await;
        }
        slice
    }

    async fn read_all(
        &self,
        read: eventfold::core::ReadAll,
    ) -> eventfold::core::StoreResult<eventfold::core::AllSlice> {
        self.inner.read_all(read).await
    }

    fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: eventfold::core::SubscribeFrom<Revision>,
    ) -> EventSubscription {
        self.inner.subscribe_stream(stream, from)
    }

    fn subscribe_all(
        &self,
        from: eventfold::core::SubscribeFrom<eventfold::core::Position>,
        filter: eventfold::core::EventFilter,
    ) -> EventSubscription {
        self.inner.subscribe_all(from, filter)
    }

    async fn stream_info(
        &self,
        stream: &StreamName,
    ) -> eventfold::core::StoreResult<eventfold::core::StreamInfo> {
        self.inner.stream_info(stream).await
    }

    async fn list_streams(
        &self,
        list: eventfold::core::ListStreams,
    ) -> eventfold::core::StoreResult<eventfold::core::StreamList> {
        self.inner.list_streams(list).await
    }

    async fn get_metadata(
        &self,
        stream: &StreamName,
    ) -> eventfold::core::StoreResult<StreamMetadata> {
        self.inner.get_metadata(stream).await
    }

    async fn set_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> eventfold::core::StoreResult<()> {
        self.inner.set_metadata(stream, metadata).await
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: eventfold::core::DeleteMode,
    ) -> eventfold::core::StoreResult<()> {
        self.inner.delete_stream(stream, expected, mode).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_both_succeed_the_loser_retried_on_fresh_state() {
    let (setup, a, b) = race_two_reservations(4, 5).await;
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut attempts = [a.attempts, b.attempts];
    attempts.sort();
    assert_eq!(attempts, [1, 2], "exactly one command was retried");
    let mut revisions = [a.revision.unwrap(), b.revision.unwrap()];
    revisions.sort();
    assert_eq!(revisions, [Revision(1), Revision(2)]);

    let loaded = setup.load("sku-1").await.unwrap();
    assert_eq!(
        loaded.state,
        Stock {
            available: 1,
            reserved: 9
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_decides_again_and_can_be_rejected_on_the_fresh_state() {
    // Each wants 6 of 10: the loser, decided again on the winner's state, is refused.
    let (setup, a, b) = race_two_reservations(6, 6).await;
    let rejected = [&a, &b]
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(RepositoryError::Rejected(StockError::OutOfStock {
                    requested: 6,
                    available: 4
                }))
            )
        })
        .count();
    assert_eq!(rejected, 1, "{a:?} {b:?}");
    assert_eq!(setup.load("sku-1").await.unwrap().state.available, 4);
}

#[tokio::test]
async fn a_conflict_on_every_attempt_is_reported_after_the_last() {
    let engine = memory_store();
    let repo = Repository::<Stock>::new(Racing::new(engine.clone(), 0, true)).with_max_attempts(4);
    repo.execute("sku-1", receive(10), &Context::new())
        .await
        .unwrap_err();
    let err = repo
        .execute("sku-1", reserve(1, "o-1"), &Context::new())
        .await
        .unwrap_err();
    match &err {
        RepositoryError::Conflict {
            stream, attempts, ..
        } => {
            assert_eq!(stream.as_str(), "stock-sku-1");
            assert_eq!(*attempts, 4);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(err.to_string().contains("max_attempts"), "{err}");
    assert!(
        matches!(
            std::error::Error::source(&err).and_then(|s| s.downcast_ref::<StoreError>()),
            Some(StoreError::WrongExpectedRevision { .. })
        ),
        "{err:?}"
    );
    // Only the rival's events were written: 4 attempts of each command.
    let info = engine.stream_info(&stream("stock-sku-1")).await.unwrap();
    assert_eq!(info.event_count, 8);
}

// ---- snapshots ----

#[tokio::test]
async fn snapshots_are_taken_every_n_events_and_loads_start_from_them() {
    let store = memory_store();
    let repo = Repository::<Stock>::new(store.clone()).with_snapshots(SnapshotPolicy::every(5));
    let ctx = Context::new();
    for _ in 0..12 {
        repo.execute("sku-1", receive(1), &ctx).await.unwrap();
    }

    // Snapshots after revisions 4 and 9; the load reads 10 and 11 only.
    let snapshots = read(&*store, "snapshot-stock-sku-1").await;
    let covered: Vec<_> = snapshots
        .iter()
        .map(|e| e.metadata["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(covered, [4, 9]);
    assert!(
        snapshots
            .iter()
            .all(|e| e.event_type.as_str() == SNAPSHOT_EVENT_TYPE)
    );
    let loaded = repo.load("sku-1").await.unwrap();
    assert_eq!(loaded.snapshot_revision, Some(Revision(9)));
    assert_eq!(loaded.events_applied, 2);
    assert_eq!(loaded.state.available, 12);
    assert_eq!(loaded.revision, Some(Revision(11)));

    // A past state older than the latest snapshot is rebuilt from the events.
    let past = repo.load_at_revision("sku-1", Revision(3)).await.unwrap();
    assert_eq!(past.snapshot_revision, None);
    assert_eq!((past.state.available, past.events_applied), (4, 4));

    // Hide every event the snapshot covers: the state is still whole (the snapshot is used),
    // while a repository without snapshots now sees only the last two events.
    let aggregate = stream("stock-sku-1");
    store
        .set_metadata(
            &aggregate,
            StreamMetadata {
                truncate_before: Some(Revision(10)),
                ..StreamMetadata::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(repo.load("sku-1").await.unwrap().state.available, 12);
    let without = Repository::<Stock>::new(store.clone());
    assert_eq!(without.load("sku-1").await.unwrap().state.available, 2);

    // Older snapshots are not kept forever.
    let meta = store
        .get_metadata(&stream("snapshot-stock-sku-1"))
        .await
        .unwrap();
    assert_eq!(meta.max_count, Some(2));
}

#[tokio::test]
async fn a_snapshot_of_another_version_is_ignored_and_the_state_rebuilt() {
    let store = memory_store();
    let v1 = Repository::<Stock>::new(store.clone()).with_snapshots(SnapshotPolicy::every(3));
    let ctx = Context::new();
    for _ in 0..7 {
        v1.execute("sku-1", receive(2), &ctx).await.unwrap();
    }
    assert_eq!(
        v1.load("sku-1").await.unwrap().snapshot_revision,
        Some(Revision(5))
    );

    // The v1 snapshot would deserialize into StockV2 with deliveries = 0: a misread.
    let v2 = Repository::<StockV2>::new(store.clone()).with_snapshots(SnapshotPolicy::every(3));
    let loaded = v2.load("sku-1").await.unwrap();
    assert_eq!(loaded.snapshot_revision, None);
    assert_eq!(loaded.events_applied, 7);
    assert_eq!(
        loaded.state,
        StockV2 {
            available: 14,
            reserved: 0,
            deliveries: 7
        }
    );

    // The next command writes a version-2 snapshot, which later loads use.
    v2.execute("sku-1", receive(1), &ctx).await.unwrap();
    let loaded = v2.load("sku-1").await.unwrap();
    assert_eq!(loaded.snapshot_revision, Some(Revision(7)));
    assert_eq!(loaded.state.deliveries, 8);
    // ... and which v1 in turn ignores.
    let loaded = v1.load("sku-1").await.unwrap();
    assert_eq!(loaded.snapshot_revision, None);
    assert_eq!(loaded.state.available, 15);
}

#[tokio::test]
async fn a_snapshot_that_does_not_deserialize_is_ignored() {
    let store = memory_store();
    let repo = Repository::<Stock>::new(store.clone()).with_snapshots(SnapshotPolicy::every(100));
    let ctx = Context::new();
    for _ in 0..3 {
        repo.execute("sku-1", receive(1), &ctx).await.unwrap();
    }
    let mut metadata = eventfold::core::Metadata::new();
    metadata.insert("revision".into(), 2.into());
    let garbage = NewEvent::json(
        EventType::new(SNAPSHOT_EVENT_TYPE).unwrap(),
        &serde_json::json!({"something": "else"}),
    )
    .with_schema_version(Stock::SNAPSHOT_VERSION)
    .with_metadata(metadata);
    store
        .append(
            &stream("snapshot-stock-sku-1"),
            ExpectedRevision::Any,
            vec![garbage],
        )
        .await
        .unwrap();

    let loaded = repo.load("sku-1").await.unwrap();
    assert_eq!(loaded.snapshot_revision, None);
    assert_eq!(loaded.state.available, 3);
}

#[tokio::test]
async fn a_snapshot_that_cannot_be_written_does_not_fail_the_command() {
    let store = memory_store();
    // A hard-deleted snapshot stream refuses every append.
    store
        .delete_stream(
            &stream("snapshot-stock-sku-1"),
            ExpectedRevision::Any,
            eventfold::core::DeleteMode::Hard,
        )
        .await
        .unwrap();
    let repo = Repository::<Stock>::new(store.clone()).with_snapshots(SnapshotPolicy::every(1));
    let ctx = Context::new();
    for n in 0..3 {
        let done = repo.execute("sku-1", receive(1), &ctx).await.unwrap();
        assert_eq!(done.revision, Some(Revision(n)));
    }
    let loaded = repo.load("sku-1").await.unwrap();
    assert_eq!(loaded.snapshot_revision, None);
    assert_eq!(loaded.state.available, 3);
}

// ---- codecs and upcasting ----

#[tokio::test]
async fn old_schema_versions_are_upcast_on_load() {
    let store = memory_store();
    let old = NewEvent::json(
        EventType::new("stock.received").unwrap(),
        &serde_json::json!({"qty": 7}),
    )
    .with_schema_version(1);
    store
        .append(
            &stream("stock-sku-1"),
            ExpectedRevision::NoStream,
            vec![old],
        )
        .await
        .unwrap();

    let plain = Repository::<Stock>::new(store.clone());
    let err = plain.load("sku-1").await.unwrap_err();
    match &err {
        RepositoryError::Codec {
            revision, source, ..
        } => {
            assert_eq!(*revision, Some(Revision(0)));
            assert!(matches!(source, CodecError::NoUpcaster { found: 1, .. }));
        }
        other => panic!("expected a codec error, got {other:?}"),
    }

    let upcasting = Repository::<Stock>::new(store.clone()).with_upcasters(
        Upcasters::new().register("stock.received", 1, |old: ReceivedV1| Received {
            quantity: old.qty,
        }),
    );
    assert_eq!(upcasting.load("sku-1").await.unwrap().state.available, 7);
    // Commands decide on the upcast history and append at the current version.
    let done = upcasting
        .execute("sku-1", reserve(7, "o-1"), &Context::new())
        .await
        .unwrap();
    assert_eq!(done.state.available, 0);
}

#[tokio::test]
async fn messagepack_events_and_snapshots() {
    let store = memory_store();
    let repo = Repository::<Stock>::new(store.clone())
        .with_codec(Codec::MessagePack)
        .with_snapshots(SnapshotPolicy::every(2));
    let ctx = Context::new();
    repo.execute("sku-1", receive(5), &ctx).await.unwrap();
    repo.execute("sku-1", reserve(2, "o-1"), &ctx)
        .await
        .unwrap();
    repo.execute("sku-1", receive(1), &ctx).await.unwrap();

    let msgpack = ContentType::new("application/vnd.msgpack").unwrap();
    for name in ["stock-sku-1", "snapshot-stock-sku-1"] {
        let events = read(&*store, name).await;
        assert!(!events.is_empty());
        assert!(events.iter().all(|e| e.content_type == msgpack), "{name}");
    }
    let loaded = repo.load("sku-1").await.unwrap();
    assert_eq!(loaded.snapshot_revision, Some(Revision(1)));
    assert_eq!(
        loaded.state,
        Stock {
            available: 4,
            reserved: 2
        }
    );
    // A JSON repository reads the same stream: reading follows each event's content type.
    let json = Repository::<Stock>::new(store.clone());
    assert_eq!(json.load("sku-1").await.unwrap().state, loaded.state);
}

#[tokio::test]
async fn an_id_that_makes_no_stream_name_is_refused() {
    let store = memory_store();
    let repo = Repository::<Stock>::new(store);
    let err = repo.load(&"x".repeat(100_000)).await.unwrap_err();
    assert!(matches!(err, RepositoryError::InvalidId { .. }), "{err:?}");
}

// ---- the state cache ----

#[tokio::test]
async fn a_cached_repository_writes_the_same_events_and_skips_the_load() {
    let store = memory_store();
    let plain = Repository::<Stock>::new(store.clone());
    let cached = Repository::<Stock>::new(store.clone()).with_cache(16);
    let ctx = Context::new();
    let commands = [
        receive(10),
        reserve(4, "o-1"),
        reserve(7, "o-2"),
        receive(2),
    ];
    for (n, command) in commands.into_iter().enumerate() {
        let a = plain.execute("sku-1", command.clone(), &ctx).await;
        let b = cached.execute("sku-2", command, &ctx).await;
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(
                    (&a.state, &a.events, a.revision),
                    (&b.state, &b.events, b.revision)
                );
                // Every command but the first (a new aggregate) starts from the cache.
                assert_eq!(b.from_cache, n > 0, "command {n}");
                assert!(!a.from_cache);
                assert_eq!(b.events_loaded, 0);
                assert_eq!(
                    a.events_loaded,
                    a.revision.unwrap().0 + 1 - a.events.len() as u64
                );
            }
            (Err(a), Err(b)) => assert_eq!(a.rejection(), b.rejection()),
            (a, b) => panic!("outcomes differ: {a:?} {b:?}"),
        }
    }
    assert_eq!(
        (cached.cached_len(), cached.cache_capacity()),
        (1, Some(16))
    );
    assert_eq!((plain.cached_len(), plain.cache_capacity()), (0, None));

    let stored = |events: Vec<RecordedEvent>| {
        events
            .into_iter()
            .map(|e| (e.revision, e.event_type, e.data))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        stored(read(&*store, "stock-sku-1").await),
        stored(read(&*store, "stock-sku-2").await)
    );
    let (a, b) = (
        plain.load("sku-1").await.unwrap(),
        cached.load("sku-2").await.unwrap(),
    );
    assert_eq!((a.state, a.revision), (b.state, b.revision));
    // A load always reads the store.
    assert_eq!(b.events_applied, 3);
}

#[tokio::test]
async fn a_cached_aggregate_sees_what_another_process_appended() {
    let store = memory_store();
    let here = Repository::<Stock>::new(store.clone()).with_cache(16);
    let elsewhere = Repository::<Stock>::new(store.clone());
    let ctx = Context::new();
    here.execute("sku-1", receive(10), &ctx).await.unwrap();
    elsewhere
        .execute("sku-1", reserve(6, "o-1"), &ctx)
        .await
        .unwrap();

    // The cached state (10 available) is behind: the tail read brings it to 4 and the
    // command is decided, and refused, on that.
    let refused = here
        .execute("sku-1", reserve(5, "o-2"), &ctx)
        .await
        .unwrap_err();
    assert_eq!(
        refused.rejection(),
        Some(&StockError::OutOfStock {
            requested: 5,
            available: 4
        })
    );
    let done = here
        .execute("sku-1", reserve(4, "o-3"), &ctx)
        .await
        .unwrap();
    assert_eq!((done.from_cache, done.events_loaded), (true, 0));
    assert_eq!(done.revision, Some(Revision(2)));
    assert_eq!(
        done.state,
        Stock {
            available: 0,
            reserved: 10
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_stale_caches_race_and_the_loser_retries_on_a_fresh_load() {
    let engine = memory_store();
    let racing = Racing::new(engine.clone(), 2, false);
    racing.reads.store(2, Ordering::SeqCst); // not holding reads yet
    let ctx = Context::new();
    let one = Repository::<Stock>::new(racing.clone()).with_cache(16);
    let two = Repository::<Stock>::new(racing.clone()).with_cache(16);
    one.execute("sku-1", receive(10), &ctx).await.unwrap();
    // A command that decides nothing still caches the state it loaded.
    let nothing = two
        .execute_with("sku-1", &ctx, |_| Ok(Vec::new()))
        .await
        .unwrap();
    assert_eq!((nothing.revision, two.cached_len()), (Some(Revision(0)), 1));

    // Both start from their cache at revision 0, read the (empty) tail before either appends.
    racing.reads.store(0, Ordering::SeqCst);
    let (a, b) = tokio::join!(
        one.execute("sku-1", reserve(4, "o-a"), &ctx),
        two.execute("sku-1", reserve(5, "o-b"), &ctx),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut runs = [(a.attempts, a.from_cache), (b.attempts, b.from_cache)];
    runs.sort();
    assert_eq!(
        runs,
        [(1, true), (2, false)],
        "the loser reloaded: {a:?} {b:?}"
    );

    let expected = Stock {
        available: 1,
        reserved: 9,
    };
    assert_eq!(engine_load(&engine).await, expected);
    // Both caches moved on: the next commands need no retry and read only the tail.
    for repo in [&one, &two] {
        let done = repo
            .execute_with("sku-1", &ctx, |_| Ok(Vec::new()))
            .await
            .unwrap();
        assert_eq!((done.state.clone(), done.attempts), (expected.clone(), 1));
        assert!(done.from_cache);
    }
}

async fn engine_load(store: &Arc<dyn EventStore>) -> Stock {
    Repository::<Stock>::new(store.clone())
        .load("sku-1")
        .await
        .unwrap()
        .state
}

#[tokio::test]
async fn the_cache_holds_at_most_its_capacity_and_evicts_the_least_recently_used() {
    let store = memory_store();
    let repo = Repository::<Stock>::new(store).with_cache(2);
    let ctx = Context::new();
    for id in ["a", "b", "c"] {
        repo.execute(id, receive(1), &ctx).await.unwrap();
    }
    assert_eq!(repo.cached_len(), 2);
    let hit = |id: &'static str| {
        let repo = repo.clone();
        let ctx = ctx.clone();
        async move {
            let done = repo.execute(id, receive(1), &ctx).await.unwrap();
            (done.from_cache, done.events_loaded)
        }
    };
    // "a", used least recently, was evicted; "b" and "c" were kept.
    assert_eq!(hit("b").await, (true, 0));
    assert_eq!(hit("a").await, (false, 1));
    // Loading "a" evicted "c", now the least recently used.
    assert_eq!(hit("c").await, (false, 1));
    assert_eq!(hit("a").await, (true, 0));
    assert_eq!(repo.cached_len(), 2);
}

#[tokio::test]
async fn a_failed_append_leaves_no_cached_state() {
    let engine = memory_store();
    let racing = Racing::new(engine.clone(), 0, false);
    let repo = Repository::<Stock>::new(racing.clone()).with_cache(16);
    let ctx = Context::new();
    repo.execute("sku-1", receive(10), &ctx).await.unwrap();
    assert_eq!(repo.cached_len(), 1);

    racing.fail_append.store(true, Ordering::SeqCst);
    let err = repo
        .execute("sku-1", reserve(3, "o-1"), &ctx)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RepositoryError::Store {
                action: "append to",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(repo.cached_len(), 0);

    // The next command loads what the store has.
    let done = repo
        .execute("sku-1", reserve(3, "o-1"), &ctx)
        .await
        .unwrap();
    assert_eq!((done.from_cache, done.events_loaded), (false, 1));
    assert_eq!(done.state.available, 7);

    // A refused append (a concurrent writer on every attempt) drops the entry too.
    let rivals = Repository::<Stock>::new(Racing::new(engine, 0, true))
        .with_cache(16)
        .with_max_attempts(2);
    rivals.execute("sku-1", receive(1), &ctx).await.unwrap_err();
    assert_eq!(rivals.cached_len(), 0);
}

#[tokio::test]
async fn snapshots_are_still_written_with_the_cache() {
    let store = memory_store();
    let repo = Repository::<Stock>::new(store.clone())
        .with_snapshots(SnapshotPolicy::every(5))
        .with_cache(4);
    let ctx = Context::new();
    for _ in 0..12 {
        repo.execute("sku-1", receive(1), &ctx).await.unwrap();
    }
    let covered: Vec<_> = read(&*store, "snapshot-stock-sku-1")
        .await
        .iter()
        .map(|e| e.metadata["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(covered, [4, 9]);
    let loaded = repo.load("sku-1").await.unwrap();
    assert_eq!(
        (loaded.snapshot_revision, loaded.state.available),
        (Some(Revision(9)), 12)
    );
}
