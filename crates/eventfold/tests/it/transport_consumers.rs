//! Projections and sagas fed from a message broker: on the in-process `MemoryTransport`
//! (duplicates, out-of-order redelivery, poison events, restarts) and once each on the real
//! Redis.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventfold::core::{EventId, Position, RecordedEvent, Revision, StreamName, Timestamp};
use eventfold::transport::{
    ConsumerGroup, DeadLetter, MemoryTransport, Topic, Transport, publish_events,
};
use eventfold::{
    BoxError, Codec, CommandSender, Context, DomainEvent, Effects, Envelope, Gaps, HandlerStats,
    InMemoryReadModel, ManualClock, MemoryProjection, Projection, RetryPolicy, RunningHandler,
    Saga, SagaCommand, SagaManager, SendError, StreamReadModel, TransportProjection,
    TransportSource, encode_event,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::support::memory_store;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Added {
    pub n: u64,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "tally.")]
pub enum TallyEvent {
    Added(Added),
    Poisoned,
}

/// Per stream, the numbers added, in the order applied. Refuses `Poisoned` every time.
struct Tally;

impl Projection for Tally {
    type Event = TallyEvent;
    fn name(&self) -> &str {
        "tally"
    }
}

impl MemoryProjection for Tally {
    type State = BTreeMap<String, Vec<u64>>;

    fn apply(
        &self,
        state: &mut Self::State,
        events: &[Envelope<TallyEvent>],
    ) -> Result<(), BoxError> {
        for e in events {
            // Changes the state before failing: the read model must throw that away.
            let applied = state.entry(e.stream.as_str().to_owned()).or_default();
            match &e.event {
                TallyEvent::Added(a) => applied.push(a.n),
                TallyEvent::Poisoned => {
                    applied.push(u64::MAX);
                    return Err(format!("revision {} is poisoned", e.revision.0).into());
                }
            }
        }
        Ok(())
    }
}

/// `event` as a store would have recorded it as `revision` of `stream`.
fn recorded<E: DomainEvent>(event: &E, stream: &str, revision: u64) -> RecordedEvent {
    let new = encode_event(event, Codec::Json, &Context::new()).unwrap();
    RecordedEvent {
        id: new.id,
        stream: StreamName::new(stream).unwrap(),
        event_type: new.event_type,
        revision: Revision(revision),
        position: Position(revision),
        timestamp: Timestamp::now(),
        schema_version: new.schema_version,
        content_type: new.content_type,
        data: new.data,
        metadata: new.metadata,
        tags: Default::default(),
    }
}

fn added(stream: &str, revision: u64, n: u64) -> RecordedEvent {
    recorded(&TallyEvent::Added(Added { n }), stream, revision)
}

/// An event of a type the projection does not read.
fn foreign(stream: &str, revision: u64) -> RecordedEvent {
    recorded(&Other::Noted, stream, revision)
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "other.")]
pub enum Other {
    Noted,
}

/// Quick retries: 3 attempts, 10 ms then 20 ms.
fn quick() -> RetryPolicy {
    RetryPolicy::new(3)
        .initial_delay(Duration::from_millis(10))
        .jitter(0.0)
}

/// A memory broker with `events` published to `tallies`.
async fn broker_with(events: &[RecordedEvent]) -> (Arc<dyn Transport>, Topic) {
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let topic = Topic::new("tallies").unwrap();
    publish_events(&*transport, &topic, events).await.unwrap();
    (transport, topic)
}

/// Starts a `Tally` projection into `model` as `group`, with [`quick`] retries.
fn project(
    transport: &Arc<dyn Transport>,
    topic: &Topic,
    group: &str,
    model: &InMemoryReadModel<Tally>,
    gaps: Gaps,
) -> RunningHandler {
    TransportProjection::new(
        transport.clone(),
        topic.clone(),
        ConsumerGroup::new(group).unwrap(),
        model.clone(),
    )
    .retry(quick())
    .gaps(gaps)
    .spawn()
}

/// Waits (at most 20 s) until `done` holds for the stats.
async fn wait(
    running: &mut RunningHandler,
    done: impl FnMut(&HandlerStats) -> bool,
) -> HandlerStats {
    tokio::time::timeout(Duration::from_secs(20), running.wait_until(done))
        .await
        .expect("got there within 20 s")
        .expect("still running")
}

fn tallies(model: &InMemoryReadModel<Tally>) -> BTreeMap<String, Vec<u64>> {
    model.read(|s| s.clone())
}

fn tally(pairs: &[(&str, &[u64])]) -> BTreeMap<String, Vec<u64>> {
    pairs
        .iter()
        .map(|(s, ns)| ((*s).to_owned(), ns.to_vec()))
        .collect()
}

async fn revision(model: &InMemoryReadModel<Tally>, stream: &str) -> Option<u64> {
    model
        .stream_revision(&StreamName::new(stream).unwrap())
        .await
        .unwrap()
        .map(|r| r.0)
}

async fn dead(transport: &Arc<dyn Transport>, topic: &Topic, group: &str) -> Vec<DeadLetter> {
    transport
        .dead_letters(topic, &ConsumerGroup::new(group).unwrap(), 10)
        .await
        .unwrap()
}

#[tokio::test]
async fn duplicates_are_acked_without_applying_them_twice() {
    let a0 = added("tally-a", 0, 10);
    let a1 = added("tally-a", 1, 11);
    let (transport, topic) = broker_with(&[
        a0.clone(),
        a1.clone(),
        // A relay that published again after a crash: the same events, the same revisions.
        a0,
        a1,
        added("tally-b", 0, 20),
        // Not read by the projection, but it is revision 2 of its stream.
        foreign("tally-a", 2),
        added("tally-a", 3, 13),
    ])
    .await;
    let model = InMemoryReadModel::new(Tally);
    let mut running = project(&transport, &topic, "tally", &model, Gaps::Wait);
    let stats = wait(&mut running, |s| s.handled == 7).await;
    running.stop().await.unwrap();

    assert_eq!(
        tallies(&model),
        tally(&[("tally-a", &[10, 11, 13]), ("tally-b", &[20])])
    );
    assert_eq!(revision(&model, "tally-a").await, Some(3));
    assert_eq!(revision(&model, "tally-b").await, Some(0));
    assert_eq!((stats.failed_attempts, stats.dead_lettered), (0, 0));
    assert!(dead(&transport, &topic, "tally").await.is_empty());
}

#[tokio::test]
async fn events_redelivered_out_of_order_wait_for_their_predecessors() {
    // The broker hands them out 2, 1, 0 (a retried event overtaken by its successors).
    let events = [
        added("tally-a", 2, 12),
        added("tally-a", 1, 11),
        added("tally-a", 0, 10),
    ];
    let (transport, topic) = broker_with(&events).await;

    let model = InMemoryReadModel::new(Tally);
    let mut running = project(&transport, &topic, "ordered", &model, Gaps::Wait);
    let stats = wait(&mut running, |s| s.handled == 3).await;
    running.stop().await.unwrap();
    assert_eq!(tallies(&model), tally(&[("tally-a", &[10, 11, 12])]));
    // 2 and 1 came too early, at least once each, and were delivered again.
    assert!(stats.failed_attempts >= 2, "{stats:?}");
    assert_eq!(stats.dead_lettered, 0);

    // Skipping gaps applies whatever is newer: the late ones are then duplicates.
    let skipping = InMemoryReadModel::new(Tally);
    let mut running = project(&transport, &topic, "skipping", &skipping, Gaps::Skip);
    let stats = wait(&mut running, |s| s.handled == 3).await;
    running.stop().await.unwrap();
    assert_eq!(tallies(&skipping), tally(&[("tally-a", &[12])]));
    assert_eq!(stats.failed_attempts, 0);
}

#[tokio::test]
async fn a_poison_event_is_dead_lettered_after_the_policys_attempts_and_holds_its_stream_back() {
    let poisoned = recorded(&TallyEvent::Poisoned, "tally-a", 1);
    let (transport, topic) = broker_with(&[
        added("tally-a", 0, 10),
        poisoned.clone(),
        added("tally-b", 0, 20),
    ])
    .await;
    let model = InMemoryReadModel::new(Tally);
    let mut running = project(&transport, &topic, "tally", &model, Gaps::Wait);
    let stats = wait(&mut running, |s| s.handled == 2 && s.dead_lettered == 1).await;
    assert_eq!(stats.failed_attempts, 3, "{stats:?}");

    // The failed applies left nothing behind; the other stream went on.
    assert_eq!(
        tallies(&model),
        tally(&[("tally-a", &[10]), ("tally-b", &[20])])
    );
    assert_eq!(revision(&model, "tally-a").await, Some(0));
    let letters = dead(&transport, &topic, "tally").await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0].message.id(),
        Some(poisoned.id.to_string().as_str())
    );
    assert_eq!(letters[0].attempts, 3);
    assert!(
        letters[0].reason.contains("revision 1 is poisoned"),
        "{}",
        letters[0].reason
    );

    // Its stream's next event waits for it, then follows it to the dead letters.
    let a2 = added("tally-a", 2, 12);
    publish_events(&*transport, &topic, std::slice::from_ref(&a2))
        .await
        .unwrap();
    wait(&mut running, |s| s.dead_lettered == 2).await;
    running.stop().await.unwrap();
    let letters = dead(&transport, &topic, "tally").await;
    let waiting = letters
        .iter()
        .find(|d| d.message.id() == Some(a2.id.to_string().as_str()))
        .expect("revision 2 dead-lettered");
    assert!(
        waiting.reason.contains("the next to apply is revision 1"),
        "{}",
        waiting.reason
    );
    assert_eq!(tallies(&model)["tally-a"], [10]);
}

#[tokio::test]
async fn a_restart_resumes_without_applying_anything_twice() {
    let (transport, topic) = broker_with(&[added("tally-a", 0, 10), added("tally-a", 1, 11)]).await;
    let model = InMemoryReadModel::new(Tally);
    let mut running = project(&transport, &topic, "tally", &model, Gaps::Wait);
    wait(&mut running, |s| s.handled == 2).await;
    running.stop().await.unwrap();

    // A consumer applied revision 2 and crashed before its ack: the broker still has it.
    let a2 = added("tally-a", 2, 12);
    let envelope = eventfold::Upcasters::new()
        .decode::<TallyEvent>(a2.clone())
        .unwrap();
    let stream = StreamName::new("tally-a").unwrap();
    assert!(
        model
            .apply_at(&stream, Some(Revision(1)), Revision(2), Some(&envelope))
            .await
            .unwrap()
    );
    publish_events(&*transport, &topic, &[a2, added("tally-a", 3, 13)])
        .await
        .unwrap();

    // Started again on the same read model and group: only what is new is applied.
    let mut running = project(&transport, &topic, "tally", &model, Gaps::Wait);
    let stats = wait(&mut running, |s| s.handled == 2).await;
    running.stop().await.unwrap();
    assert_eq!(tallies(&model), tally(&[("tally-a", &[10, 11, 12, 13])]));
    assert_eq!(stats.failed_attempts, 0);
    assert_eq!(revision(&model, "tally-a").await, Some(3));
}

/// Redis at `EVENTFOLD_REDIS_URL` (default 127.0.0.1:6379) and its URL; `None` (printed) when
/// it is down, a panic when `EVENTFOLD_REQUIRE_SERVICES=1`.
async fn redis() -> Option<(Arc<dyn Transport>, String)> {
    use eventfold_transport_redis::RedisTransport;
    let url =
        std::env::var("EVENTFOLD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    match RedisTransport::connect(&url).await {
        Ok(t) => Some((Arc::new(t), url)),
        Err(e) if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("EVENTFOLD_REQUIRE_SERVICES=1 but Redis at {url} is not usable: {e}")
        }
        Err(e) => {
            eprintln!("Redis at {url} is not usable, skipping: {e}");
            None
        }
    }
}

/// Deletes the Redis keys of `group` on `topic`: the shared Redis keeps no test's keys.
async fn clean_redis(url: &str, topic: &Topic, group: &str) {
    let keys =
        eventfold_transport_redis::GroupKeys::new(topic, &ConsumerGroup::new(group).unwrap());
    if let Ok(client) = redis::Client::open(url)
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(&[keys.stream, keys.replay, keys.retry, keys.dead])
            .query_async(&mut conn)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_consumes_from_redis_once_per_event() {
    let Some((transport, url)) = redis().await else {
        return;
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let topic = Topic::new(format!("fw-tallies-{suffix}")).unwrap();
    let a0 = added("tally-a", 0, 10);
    let poisoned = recorded(&TallyEvent::Poisoned, "tally-b", 0);
    publish_events(
        &*transport,
        &topic,
        &[
            a0.clone(),
            poisoned.clone(),
            added("tally-a", 1, 11),
            a0,
            added("tally-a", 2, 12),
        ],
    )
    .await
    .unwrap();

    let model = InMemoryReadModel::new(Tally);
    let mut running = TransportProjection::new(
        transport.clone(),
        topic.clone(),
        ConsumerGroup::new("tally").unwrap(),
        model.clone(),
    )
    .retry(RetryPolicy::new(2).initial_delay(Duration::from_millis(20)))
    .spawn();
    let waited = tokio::time::timeout(
        Duration::from_secs(20),
        running.wait_until(|s| s.handled == 4 && s.dead_lettered == 1),
    )
    .await;
    running.stop().await.unwrap();
    let letters = dead(&transport, &topic, "tally").await;
    clean_redis(&url, &topic, "tally").await;

    waited
        .expect("consumed within 20 s")
        .expect("the projection is running");
    assert_eq!(tallies(&model), tally(&[("tally-a", &[10, 11, 12])]));
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0].message.id(),
        Some(poisoned.id.to_string().as_str())
    );
    assert_eq!(letters[0].attempts, 2);
}

// --- A saga fed from a broker -----------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderRef {
    pub order: String,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "order.")]
pub enum OrderEvent {
    Placed(OrderRef),
    ItemAdded(OrderRef),
    Paid(OrderRef),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OrderCommand {
    Reserve {
        order: String,
    },
    /// Sent for each item: not idempotent by its state, only by the event's id.
    ReserveItem {
        order: String,
        item: u32,
    },
    Cancel {
        order: String,
    },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Checkout {
    items: u32,
}

const PAYMENT_TIMEOUT: Duration = Duration::from_secs(30);

struct CheckoutSaga;

impl Saga for CheckoutSaga {
    const NAME: &'static str = "checkout";
    type Event = OrderEvent;
    type State = Checkout;
    type Command = OrderCommand;

    fn instance_id(&self, event: &Envelope<OrderEvent>) -> Option<String> {
        let (OrderEvent::Placed(r) | OrderEvent::ItemAdded(r) | OrderEvent::Paid(r)) = &event.event;
        Some(r.order.clone())
    }

    fn react(
        &self,
        s: &mut Checkout,
        event: &Envelope<OrderEvent>,
        fx: &mut Effects<OrderCommand>,
    ) {
        match &event.event {
            OrderEvent::Placed(r) => {
                fx.send(OrderCommand::Reserve {
                    order: r.order.clone(),
                })
                .schedule("payment", PAYMENT_TIMEOUT);
            }
            OrderEvent::ItemAdded(r) => {
                s.items += 1;
                fx.send(OrderCommand::ReserveItem {
                    order: r.order.clone(),
                    item: s.items,
                });
            }
            OrderEvent::Paid(_) => {
                fx.cancel("payment").complete();
            }
        }
    }

    fn on_timeout(&self, s: &mut Checkout, name: &str, fx: &mut Effects<OrderCommand>) {
        let _ = s;
        if name == "payment" {
            fx.send(OrderCommand::Cancel {
                order: "timed-out".into(),
            })
            .complete();
        }
    }
}

/// Records every command it accepted.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<SagaCommand<OrderCommand>>>>);

#[async_trait::async_trait]
impl CommandSender<OrderCommand> for Recorder {
    async fn send(&self, c: &SagaCommand<OrderCommand>) -> Result<(), SendError> {
        self.0.lock().push(c.clone());
        Ok(())
    }
}

impl Recorder {
    fn commands(&self) -> Vec<OrderCommand> {
        self.0.lock().iter().map(|c| c.command.clone()).collect()
    }

    /// Waits (at most 20 s) until `n` commands were accepted; all of them.
    async fn wait_for(&self, n: usize) -> Vec<OrderCommand> {
        for _ in 0..2000 {
            if self.0.lock().len() >= n {
                return self.commands();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{n} commands expected, got {:?}", self.commands());
    }
}

fn order_event(event: OrderEvent, revision: u64) -> RecordedEvent {
    let (OrderEvent::Placed(r) | OrderEvent::ItemAdded(r) | OrderEvent::Paid(r)) = &event;
    let stream = format!("order-{}", r.order);
    recorded(&event, &stream, revision)
}

fn order(o: &str) -> OrderRef {
    OrderRef { order: o.into() }
}

fn start_saga(
    transport: &Arc<dyn Transport>,
    topic: &Topic,
    store: &Arc<dyn eventfold::core::EventStore>,
    recorder: &Recorder,
    clock: &ManualClock,
) -> JoinHandle<()> {
    let source = TransportSource::new(
        transport.clone(),
        topic.clone(),
        ConsumerGroup::new("checkout").unwrap(),
    )
    .retry(quick())
    // The test aborts managers (a crash): what one had received comes back after this.
    .ack_timeout(Duration::from_secs(1));
    let manager =
        SagaManager::from_transport(CheckoutSaga, store.clone(), recorder.clone(), source)
            .with_clock(Arc::new(clock.clone()));
    tokio::spawn(async move {
        let Err(e) = manager.run().await;
        panic!("the saga manager stopped: {e}");
    })
}

/// The saga on `transport`: events from the broker, commands once each, a timeout from the
/// clock, redeliveries (also after a restart) sending nothing. Returns the topic to clean up.
async fn checkout_on(transport: Arc<dyn Transport>, topic: Topic) {
    let store = memory_store();
    let recorder = Recorder::default();
    let clock = ManualClock::starting_now();
    let placed = order_event(OrderEvent::Placed(order("o1")), 0);
    let item = order_event(OrderEvent::ItemAdded(order("o1")), 1);
    publish_events(&*transport, &topic, &[placed.clone(), item.clone()])
        .await
        .unwrap();
    let task = start_saga(&transport, &topic, &store, &recorder, &clock);
    let o1 = |item| OrderCommand::ReserveItem {
        order: "o1".into(),
        item,
    };
    let reserve = OrderCommand::Reserve { order: "o1".into() };
    assert_eq!(recorder.wait_for(2).await, [reserve.clone(), o1(1)]);

    // Both delivered again (a publisher that published twice), then a marker: o2's placing.
    let marker = order_event(OrderEvent::Placed(order("o2")), 0);
    publish_events(&*transport, &topic, &[placed.clone(), item.clone(), marker])
        .await
        .unwrap();
    let sent = recorder.wait_for(3).await;
    assert_eq!(
        sent[2],
        OrderCommand::Reserve { order: "o2".into() },
        "the redeliveries sent nothing: {sent:?}"
    );

    // Restarted; the same events once more: still nothing sent twice.
    task.abort();
    let _ = task.await;
    let task = start_saga(&transport, &topic, &store, &recorder, &clock);
    let item2 = order_event(OrderEvent::ItemAdded(order("o1")), 2);
    publish_events(&*transport, &topic, &[item, placed, item2])
        .await
        .unwrap();
    let sent = recorder.wait_for(4).await;
    assert_eq!(sent[3], o1(2), "{sent:?}");

    // The payment never comes: both instances' timeouts fire from the clock.
    clock.advance(PAYMENT_TIMEOUT + Duration::from_secs(1));
    let sent = recorder.wait_for(6).await;
    let cancels = sent[4..]
        .iter()
        .filter(|c| matches!(c, OrderCommand::Cancel { .. }))
        .count();
    assert_eq!(cancels, 2, "{sent:?}");
    let o1_state = SagaManager::<CheckoutSaga>::read_instance(&*store, "o1")
        .await
        .unwrap()
        .expect("stored");
    assert!(o1_state.completed && o1_state.timeouts.is_empty());
    assert_eq!(o1_state.state.items, 2);
    // Command ids are all distinct: no command was sent twice.
    let ids: std::collections::HashSet<EventId> = recorder.0.lock().iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 6);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(recorder.commands().len(), 6, "{:?}", recorder.commands());
    task.abort();
    let _ = task.await;
}

#[tokio::test]
async fn a_saga_fed_from_a_broker_sends_each_command_once_and_times_out() {
    let (transport, topic) = broker_with(&[]).await;
    checkout_on(transport.clone(), topic.clone()).await;
    assert!(dead(&transport, &topic, "checkout").await.is_empty());
}

#[tokio::test]
async fn a_saga_dead_letters_an_event_that_does_not_decode_and_goes_on() {
    let mut garbled = order_event(OrderEvent::Placed(order("bad")), 0);
    garbled.data = b"{\"nothing\": 1}".to_vec();
    let (transport, topic) = broker_with(&[
        garbled.clone(),
        foreign("order-x", 0),
        order_event(OrderEvent::Placed(order("o1")), 0),
    ])
    .await;
    let recorder = Recorder::default();
    let task = start_saga(
        &transport,
        &topic,
        &memory_store(),
        &recorder,
        &ManualClock::starting_now(),
    );
    assert_eq!(
        recorder.wait_for(1).await,
        [OrderCommand::Reserve { order: "o1".into() }]
    );
    let letters = dead(&transport, &topic, "checkout").await;
    task.abort();
    let _ = task.await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0].message.id(),
        Some(garbled.id.to_string().as_str())
    );
    assert!(
        letters[0].reason.contains("saga checkout: cannot decode"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_consumes_from_redis_sends_once_and_times_out() {
    let Some((transport, url)) = redis().await else {
        return;
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let topic = Topic::new(format!("fw-orders-{suffix}")).unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::spawn(checkout_on(transport.clone(), topic.clone())),
    )
    .await;
    let letters = dead(&transport, &topic, "checkout").await;
    clean_redis(&url, &topic, "checkout").await;
    outcome
        .expect("done within 60 s")
        .expect("the scenario passed");
    assert!(letters.is_empty(), "{letters:?}");
}
