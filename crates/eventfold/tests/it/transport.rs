//! The same handler consuming from a message broker (`TransportRunner`): on the in-process
//! `MemoryTransport`, and once on the real Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use eventfold::core::{
    ContentType, EventType, NewEvent, Position, RecordedEvent, Revision, StreamName, Timestamp,
};
use eventfold::transport::{
    ConsumerGroup, DeadLetter, Features, MemoryTransport, Message, SubscribeSettings, Subscriber,
    Topic, Transport, TransportError, TransportResult, publish_events,
};
use eventfold::{
    BoxError, Context, DomainEvent, Envelope, EventHandler, Handled, HandledOutcome, HandlerStats,
    Idempotent, InMemoryProcessedIds, Permanent, RetryPolicy, RunnerError, RunningHandler,
    TransportRunner, Upcasters, encode_event,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shipped {
    pub order_id: String,
    pub carrier: String,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "shipment.")]
pub enum ShipmentEvent {
    Shipped(Shipped),
}

/// Records the orders it handled and every attempt; fails every attempt on carrier `NOBODY`,
/// and permanently on carrier `NEVER`.
#[derive(Default)]
struct Shipping {
    handled: Mutex<Vec<String>>,
    attempts: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl EventHandler<ShipmentEvent> for Shipping {
    fn name(&self) -> &str {
        "shipping"
    }

    async fn handle(&self, envelope: &Envelope<ShipmentEvent>) -> Result<(), BoxError> {
        let ShipmentEvent::Shipped(s) = &envelope.event;
        self.attempts.lock().push(s.order_id.clone());
        match s.carrier.as_str() {
            "NOBODY" => Err(format!("no carrier for order {}", s.order_id).into()),
            "NEVER" => Err(Permanent::new(format!("order {} cannot ship", s.order_id)).into()),
            _ => {
                self.handled.lock().push(s.order_id.clone());
                Ok(())
            }
        }
    }
}

/// An event as a store would have recorded it, at `position`.
fn recorded(event: &ShipmentEvent, position: u64) -> RecordedEvent {
    let new = encode_event(event, eventfold::Codec::Json, &Context::new()).unwrap();
    from_new(new, position)
}

fn from_new(new: NewEvent, position: u64) -> RecordedEvent {
    RecordedEvent {
        id: new.id,
        stream: StreamName::new("shipment-1").unwrap(),
        event_type: new.event_type,
        revision: Revision(position),
        position: Position(position),
        timestamp: Timestamp::now(),
        schema_version: new.schema_version,
        content_type: new.content_type,
        data: new.data,
        metadata: new.metadata,
        tags: Default::default(),
    }
}

fn shipped(order: &str, carrier: &str, position: u64) -> RecordedEvent {
    recorded(
        &ShipmentEvent::Shipped(Shipped {
            order_id: order.into(),
            carrier: carrier.into(),
        }),
        position,
    )
}

fn names(topic: &str, group: &str) -> (Topic, ConsumerGroup) {
    (
        Topic::new(topic).unwrap(),
        ConsumerGroup::new(group).unwrap(),
    )
}

/// Quick retries: 3 attempts, 10 ms then 20 ms.
fn quick() -> RetryPolicy {
    RetryPolicy::new(3)
        .initial_delay(Duration::from_millis(10))
        .jitter(0.0)
}

/// A `Shipping` handler and its runner on `group`, with [`quick`] retries.
fn shipping(
    transport: &Arc<dyn Transport>,
    topic: &Topic,
    group: &ConsumerGroup,
) -> (Arc<Shipping>, TransportRunner<ShipmentEvent, Arc<Shipping>>) {
    let handler = Arc::new(Shipping::default());
    let runner = TransportRunner::new(
        transport.clone(),
        topic.clone(),
        group.clone(),
        handler.clone(),
    )
    .retry(quick());
    (handler, runner)
}

/// Waits (at most 10 s) until `done` holds for the runner's stats.
async fn wait(
    running: &mut RunningHandler,
    done: impl FnMut(&HandlerStats) -> bool,
) -> HandlerStats {
    tokio::time::timeout(Duration::from_secs(10), running.wait_until(done))
        .await
        .expect("the runner got there within 10 s")
        .expect("the runner is running")
}

/// A memory broker with `events` published to the topic `shipments`, and the group `shipping`.
async fn broker_with(events: &[RecordedEvent]) -> (Arc<dyn Transport>, Topic, ConsumerGroup) {
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let (topic, group) = names("shipments", "shipping");
    publish_events(&*transport, &topic, events).await.unwrap();
    (transport, topic, group)
}

/// The group's dead letters (at most 10).
async fn dead_letters(
    transport: &Arc<dyn Transport>,
    topic: &Topic,
    group: &ConsumerGroup,
) -> Vec<DeadLetter> {
    transport.dead_letters(topic, group, 10).await.unwrap()
}

#[tokio::test]
async fn published_events_reach_the_handler_and_are_observed() {
    let events: Vec<RecordedEvent> = (1..=3)
        .map(|i| shipped(&format!("o{i}"), "DHL", i))
        .collect();
    let (transport, topic, group) = broker_with(&events).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let observer = {
        let seen = seen.clone();
        move |h: &Handled<'_>| {
            seen.lock().push((
                h.handler.to_owned(),
                h.event_type.to_owned(),
                h.outcome,
                h.attempts,
            ))
        }
    };
    let (handler, runner) = shipping(&transport, &topic, &group);
    let mut running = runner.observer(Arc::new(observer)).spawn();
    wait(&mut running, |s| s.handled == 3).await;
    // Published while running: live, too.
    publish_events(&*transport, &topic, &[shipped("o4", "DHL", 4)])
        .await
        .unwrap();
    let stats = wait(&mut running, |s| s.handled == 4).await;
    running.stop().await.unwrap();

    let mut handled = handler.handled.lock().clone();
    handled.sort();
    assert_eq!(handled, ["o1", "o2", "o3", "o4"]);
    assert_eq!((stats.failed_attempts, stats.dead_lettered), (0, 0));
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 4);
    for (handler, event_type, outcome, attempts) in seen {
        assert_eq!(
            (handler.as_str(), event_type.as_str(), outcome, attempts),
            ("shipping", "shipment.shipped", HandledOutcome::Succeeded, 1)
        );
    }
    assert!(dead_letters(&transport, &topic, &group).await.is_empty());
}

#[tokio::test]
async fn a_failing_handler_is_retried_then_dead_lettered_with_its_error() {
    let events = [
        shipped("bad", "NOBODY", 1),
        shipped("good", "DHL", 2),
        shipped("hopeless", "NEVER", 3),
    ];
    let (transport, topic, group) = broker_with(&events).await;

    let attempts = Arc::new(Mutex::new(Vec::new()));
    let observer = {
        let attempts = attempts.clone();
        move |h: &Handled<'_>| attempts.lock().push((h.outcome, h.attempts))
    };
    let (handler, runner) = shipping(&transport, &topic, &group);
    let mut running = runner.observer(Arc::new(observer)).spawn();
    let stats = wait(&mut running, |s| s.dead_lettered == 2 && s.handled == 1).await;
    running.stop().await.unwrap();

    // The policy's 3 attempts for the failing one, one for the permanent failure.
    let tried = handler.attempts.lock().clone();
    assert_eq!(tried.iter().filter(|o| *o == "bad").count(), 3, "{tried:?}");
    assert_eq!(
        tried.iter().filter(|o| *o == "hopeless").count(),
        1,
        "{tried:?}"
    );
    assert_eq!(*handler.handled.lock(), ["good"]);
    assert_eq!(stats.failed_attempts, 4);
    let mut failed: Vec<u32> = attempts
        .lock()
        .iter()
        .filter(|(o, _)| *o == HandledOutcome::Failed)
        .map(|(_, a)| *a)
        .collect();
    failed.sort();
    assert_eq!(failed, [1, 1, 2, 3]);

    let mut dead = dead_letters(&transport, &topic, &group).await;
    dead.sort_by_key(|d| d.message.id().map(str::to_owned));
    assert_eq!(dead.len(), 2);
    let by_id = |id: eventfold::core::EventId| {
        dead.iter()
            .find(|d| d.message.id() == Some(id.to_string().as_str()))
            .expect("dead-lettered")
    };
    let bad = by_id(events[0].id);
    assert!(
        bad.reason
            .contains("handler shipping: no carrier for order bad"),
        "{}",
        bad.reason
    );
    assert_eq!(bad.attempts, 3);
    let hopeless = by_id(events[2].id);
    assert!(
        hopeless.reason.contains("order hopeless cannot ship"),
        "{}",
        hopeless.reason
    );
    assert_eq!(hopeless.attempts, 1);
}

#[tokio::test]
async fn an_idempotent_handler_sees_a_redelivered_event_once() {
    let event = shipped("o1", "DHL", 1);
    // Published twice (a relay that crashed before saving its checkpoint): the same event id.
    let (transport, topic, group) = broker_with(std::slice::from_ref(&event)).await;
    publish_events(&*transport, &topic, &[event, shipped("o2", "DHL", 2)])
        .await
        .unwrap();

    let handler = Arc::new(Shipping::default());
    let ids = Arc::new(InMemoryProcessedIds::new(100));
    let idempotent = Idempotent::new(handler.clone(), ids, Duration::from_secs(3600));
    let mut running =
        TransportRunner::new(transport.clone(), topic.clone(), group.clone(), idempotent).spawn();
    // All three deliveries acked; the repeated one without reaching the handler.
    wait(&mut running, |s| s.handled == 3).await;
    running.stop().await.unwrap();
    assert_eq!(*handler.attempts.lock(), ["o1", "o2"]);
    assert!(dead_letters(&transport, &topic, &group).await.is_empty());
}

#[tokio::test]
async fn two_groups_each_get_every_event() {
    let events: Vec<RecordedEvent> = (1..=5)
        .map(|i| shipped(&format!("o{i}"), "DHL", i))
        .collect();
    let (transport, topic, _) = broker_with(&events).await;

    let mut runs = Vec::new();
    for group in ["billing", "email"] {
        let (handler, runner) = shipping(&transport, &topic, &ConsumerGroup::new(group).unwrap());
        runs.push((handler, runner.spawn()));
    }
    for (handler, mut running) in runs {
        wait(&mut running, |s| s.handled == 5).await;
        running.stop().await.unwrap();
        let mut handled = handler.handled.lock().clone();
        handled.sort();
        assert_eq!(handled, ["o1", "o2", "o3", "o4", "o5"]);
    }
}

#[tokio::test]
async fn what_is_not_an_event_of_the_handler_never_reaches_it() {
    let (transport, topic, group) = broker_with(&[]).await;
    // Not an eventfold event at all: no CloudEvents headers.
    let stranger = Message {
        key: "k".into(),
        headers: vec![("content-type".into(), "text/plain".into())],
        payload: b"hello".to_vec(),
    };
    // An eventfold event of a type the handler's enum does not know: acked, not handled.
    let foreign = from_new(
        NewEvent::json(
            EventType::new("invoice.sent").unwrap(),
            &serde_json::json!({"invoice": 1}),
        ),
        1,
    );
    // Of a known type, but its data does not decode: dead-lettered at once, not handled.
    let mut garbled = shipped("garbled", "DHL", 2);
    garbled.data = b"{\"order_id\": 7}".to_vec();
    garbled.content_type = ContentType::json();
    transport.publish(&topic, &[stranger]).await.unwrap();
    publish_events(
        &*transport,
        &topic,
        &[foreign, garbled.clone(), shipped("o1", "DHL", 3)],
    )
    .await
    .unwrap();

    let (handler, runner) = shipping(&transport, &topic, &group);
    let mut running = runner.spawn();
    let stats = wait(&mut running, |s| s.handled == 1 && s.dead_lettered == 1).await;
    running.stop().await.unwrap();

    assert_eq!(*handler.attempts.lock(), ["o1"]);
    assert_eq!(stats.failed_attempts, 1);
    let dead = dead_letters(&transport, &topic, &group).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead.iter()
            .any(|d| d.message.id().is_none() && d.reason.contains("not an eventfold event")),
        "the stranger, with the header it lacks: {dead:?}"
    );
    let garbled_id = garbled.id.to_string();
    assert!(
        dead.iter()
            .any(|d| d.message.id() == Some(garbled_id.as_str()) && d.attempts == 1),
        "{dead:?}"
    );
}

/// The handler on a real broker: Redis Streams (skipped, with the reason printed, when Redis is
/// down, unless `EVENTFOLD_REQUIRE_SERVICES=1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_consumes_from_redis() {
    use eventfold_transport_redis::{GroupKeys, RedisTransport};

    let url =
        std::env::var("EVENTFOLD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = match RedisTransport::connect(&url).await {
        Ok(t) => t,
        Err(e) if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("EVENTFOLD_REQUIRE_SERVICES=1 but Redis at {url} is not usable: {e}")
        }
        Err(e) => {
            eprintln!("Redis at {url} is not usable, skipping: {e}");
            return;
        }
    };
    let transport: Arc<dyn Transport> = Arc::new(redis);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (topic, group) = names(&format!("fw-shipments-{suffix}"), "shipping");
    let events = [
        shipped("o1", "DHL", 1),
        shipped("bad", "NOBODY", 2),
        shipped("o2", "UPS", 3),
    ];
    publish_events(&*transport, &topic, &events).await.unwrap();

    let (handler, runner) = shipping(&transport, &topic, &group);
    let mut running = runner
        .retry(RetryPolicy::new(2).initial_delay(Duration::from_millis(20)))
        .spawn();
    let waited = tokio::time::timeout(
        Duration::from_secs(20),
        running.wait_until(|s| s.handled == 2 && s.dead_lettered == 1),
    )
    .await;
    running.stop().await.unwrap();
    let dead = transport.dead_letters(&topic, &group, 10).await.unwrap();

    // Clean up before asserting: the shared Redis keeps no test's keys.
    let keys = GroupKeys::new(&topic, &group);
    if let Ok(client) = redis::Client::open(url.as_str())
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(&[keys.stream, keys.replay, keys.retry, keys.dead])
            .query_async(&mut conn)
            .await;
    }

    waited
        .expect("handled within 20 s")
        .expect("the runner is running");
    let mut handled = handler.handled.lock().clone();
    handled.sort();
    assert_eq!(handled, ["o1", "o2"]);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].reason.contains("no carrier for order bad"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].attempts, 2);
}

/// A broker that is unavailable for the first `down` subscribes.
struct Flapping {
    inner: MemoryTransport,
    down: AtomicU32,
}

#[async_trait::async_trait]
impl Transport for Flapping {
    fn broker(&self) -> &'static str {
        "flapping"
    }

    fn features(&self) -> Features {
        self.inner.features()
    }

    async fn publish(&self, topic: &Topic, messages: &[Message]) -> TransportResult<()> {
        self.inner.publish(topic, messages).await
    }

    async fn subscribe(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        settings: &SubscribeSettings,
    ) -> TransportResult<Box<dyn Subscriber>> {
        let down = self.down.load(Ordering::SeqCst);
        if down > 0 {
            self.down.store(down - 1, Ordering::SeqCst);
            return Err(TransportError::Unavailable {
                broker: "flapping",
                url: "memory://test".into(),
                detail: "connection refused".into(),
            });
        }
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

#[tokio::test]
async fn an_unavailable_broker_is_subscribed_again_and_given_up_on_after_the_policy() {
    let flapping = Arc::new(Flapping {
        inner: MemoryTransport::new(),
        down: AtomicU32::new(2),
    });
    let transport: Arc<dyn Transport> = flapping.clone();
    let (topic, group) = names("shipments", "shipping");
    publish_events(&*transport, &topic, &[shipped("o1", "DHL", 1)])
        .await
        .unwrap();
    let reconnect = RetryPolicy::new(3)
        .initial_delay(Duration::from_millis(10))
        .jitter(0.0);

    // Down twice, up on the third try: within the policy's 3 attempts.
    let (handler, runner) = shipping(&transport, &topic, &group);
    let mut running = runner.reconnect(reconnect.clone()).spawn();
    wait(&mut running, |s| s.handled == 1).await;
    running.stop().await.unwrap();
    assert_eq!(*handler.handled.lock(), ["o1"]);

    // Down for longer than the policy waits: the runner stops, saying why.
    flapping.down.store(3, Ordering::SeqCst);
    let (handler, runner) = shipping(&transport, &topic, &group);
    let mut running = runner.reconnect(reconnect).spawn();
    let ended = tokio::time::timeout(Duration::from_secs(10), running.wait_until(|_| false))
        .await
        .expect("the runner gave up within 10 s")
        .unwrap_err();
    assert!(ended.to_string().contains("connection refused"), "{ended}");
    let err = running.stop().await.unwrap_err();
    assert!(
        matches!(&err, RunnerError::Transport { source, .. } if source.is_retryable()),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("flapping is unavailable at memory://test: connection refused"),
        "{message}"
    );
    assert!(handler.attempts.lock().is_empty());
}

/// Version 1 of `shipment.returned`, before the field was renamed.
#[derive(Deserialize)]
struct ReturnedV1 {
    order: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Returned {
    pub order_id: String,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "shipment.")]
pub enum ReturnEvent {
    #[event(version = 2)]
    Returned(Returned),
}

#[derive(Default)]
struct Returns(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl EventHandler<ReturnEvent> for Returns {
    fn name(&self) -> &str {
        "returns"
    }

    async fn handle(&self, envelope: &Envelope<ReturnEvent>) -> Result<(), BoxError> {
        let ReturnEvent::Returned(r) = &envelope.event;
        self.0.lock().push(r.order_id.clone());
        Ok(())
    }
}

#[tokio::test]
async fn old_schema_versions_on_the_broker_are_upcast() {
    let old = from_new(
        NewEvent::json(
            EventType::new("shipment.returned").unwrap(),
            &serde_json::json!({"order": "o9"}),
        )
        .with_schema_version(1),
        1,
    );
    let (transport, topic, _) = broker_with(&[old]).await;
    let upcasting = ConsumerGroup::new("upcasting").unwrap();
    let plain = ConsumerGroup::new("plain").unwrap();

    let returns = Arc::new(Returns::default());
    let mut running = TransportRunner::new(
        transport.clone(),
        topic.clone(),
        upcasting.clone(),
        returns.clone(),
    )
    .upcasters(
        Upcasters::new().register("shipment.returned", 1, |old: ReturnedV1| Returned {
            order_id: old.order,
        }),
    )
    .spawn();
    wait(&mut running, |s| s.handled == 1).await;
    running.stop().await.unwrap();
    assert_eq!(*returns.0.lock(), ["o9"]);

    // Without the upcaster the old version is a clear error: dead-lettered at once, unhandled.
    let unhandled = Arc::new(Returns::default());
    let mut running = TransportRunner::new(
        transport.clone(),
        topic.clone(),
        plain.clone(),
        unhandled.clone(),
    )
    .spawn();
    wait(&mut running, |s| s.dead_lettered == 1).await;
    running.stop().await.unwrap();
    assert!(unhandled.0.lock().is_empty());
    let dead = dead_letters(&transport, &topic, &plain).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].reason.contains("no upcaster"), "{}", dead[0].reason);
    assert_eq!(dead[0].attempts, 1);
}
