//! Orders: an order service appends `order.placed` to `order-{id}`; email, inventory and
//! analytics handlers react independently, each with its own checkpoint; a read model answers
//! "the orders of a customer, newest first".
//!
//! The inventory handler cannot reserve an unknown SKU (the poisoned `POISON` SKU here): after
//! its retries that order is dead-lettered to `deadletter-inventory` while every other order,
//! and every other handler, carries on. The inventory handler records each reservation as an
//! `inventory.reserved` event carrying the order's correlation id ([`Envelope::context`]), and
//! is idempotent through the store itself: a reservation is appended to `reservation-{order}`
//! only if that stream does not exist yet.
//!
//! `order.placed` is at schema version 2 (lines with quantity and price). Version 1, written
//! by an earlier release, held only item ids ([`OrderPlacedV1`]); [`upcasters`] lifts it to
//! version 2 on read, so every handler and the read model see one shape and the old events are
//! never rewritten.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use eventfold::core::{
    EventStore, ExpectedRevision, NewEvent, Position, StoreError, StreamName, Timestamp,
};
use eventfold::{
    BoxError, CheckpointStore, Codec, CodecError, Context, DeadLetter, DeadLetters, DomainEvent,
    Envelope, EventHandler, HandlerRunner, HandlerStats, InMemoryCheckpoints, Permanent,
    RetryPolicy, RunnerError, RunningHandler, TransportRunner, Upcasters, encode_event,
};
use eventfold_transport::{
    ConsumerGroup, SubscribeSettings, Topic, Transport, TransportError, wire,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The SKU the inventory does not know: orders with it are dead-lettered by the inventory
/// handler.
pub const POISON_SKU: &str = "POISON";

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// Price of one, in cents.
    pub unit_price_cents: u64,
}

/// An order was placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The order.
    pub order_id: String,
    /// Who placed it.
    pub customer_id: String,
    /// What was ordered.
    pub lines: Vec<OrderLine>,
}

impl OrderPlaced {
    /// The order's total, in cents.
    pub fn total_cents(&self) -> u64 {
        self.lines
            .iter()
            .map(|l| u64::from(l.quantity).saturating_mul(l.unit_price_cents))
            .fold(0, u64::saturating_add)
    }
}

/// `order.placed` as the first release wrote it (schema version 1): item ids only, one unit of
/// each, no prices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlacedV1 {
    /// The order.
    pub order_id: String,
    /// Who placed it.
    pub customer_id: String,
    /// The items, one unit each.
    pub item_ids: Vec<String>,
}

impl From<OrderPlacedV1> for OrderPlaced {
    /// One line per item id, quantity 1; version 1 recorded no price, so it is 0.
    fn from(v1: OrderPlacedV1) -> Self {
        OrderPlaced {
            order_id: v1.order_id,
            customer_id: v1.customer_id,
            lines: v1
                .item_ids
                .into_iter()
                .map(|sku| OrderLine {
                    sku,
                    quantity: 1,
                    unit_price_cents: 0,
                })
                .collect(),
        }
    }
}

/// The upcasters every reader of orders uses: `order.placed` version 1 → 2.
pub fn upcasters() -> Upcasters {
    Upcasters::new().register("order.placed", 1, |v1: OrderPlacedV1| OrderPlaced::from(v1))
}

/// `v1` as the first release appended it (`order.placed`, schema version 1, JSON), for the
/// example and the tests to put old events into a store.
pub fn legacy_v1_event(v1: &OrderPlacedV1, context: &Context) -> Result<NewEvent, CodecError> {
    let mut metadata = eventfold::core::Metadata::new();
    context.stamp(&mut metadata);
    let event_type =
        eventfold::core::EventType::new("order.placed").map_err(|e| CodecError::Encode {
            codec: Codec::Json,
            reason: e.to_string(),
        })?;
    Ok(NewEvent::bytes(
        event_type,
        Codec::Json.content_type(),
        Codec::Json.encode(v1)?,
    )
    .with_schema_version(1)
    .with_metadata(metadata))
}

/// The events of an order (`order-{id}` streams).
#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "order.")]
pub enum OrderEvent {
    /// `order.placed`, schema version 2 (version 1 is [`OrderPlacedV1`]).
    #[event(version = 2)]
    Placed(OrderPlaced),
}

/// Stock was reserved for an order (`reservation-{order}` streams).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    /// The order.
    pub order_id: String,
    /// What was reserved: SKU and quantity.
    pub lines: Vec<(String, u32)>,
}

/// The events of the inventory.
#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "inventory.")]
pub enum InventoryEvent {
    /// `inventory.reserved`.
    Reserved(StockReserved),
}

/// Why an order was refused.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// No lines.
    #[error("order {0} has no lines; add at least one product")]
    Empty(String),
    /// A line with quantity 0.
    #[error("order {order_id} orders 0 of {sku}; give a quantity of at least 1 or drop the line")]
    ZeroQuantity {
        /// The order.
        order_id: String,
        /// The SKU.
        sku: String,
    },
    /// The id is not usable in a stream name.
    #[error("order id {order_id:?} is not usable: {reason}")]
    InvalidId {
        /// The id.
        order_id: String,
        /// Why.
        reason: String,
    },
    /// An order with this id exists.
    #[error("order {0} was already placed; use a new order id")]
    AlreadyPlaced(String),
    /// The event did not encode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The store failed.
    #[error("cannot store the order: {0}")]
    Store(#[from] StoreError),
}

/// Places orders: validates them and appends `order.placed` to `order-{id}`.
#[derive(Clone)]
pub struct OrderService {
    store: Arc<dyn EventStore>,
}

impl std::fmt::Debug for OrderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderService")
    }
}

impl OrderService {
    /// The service over `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        OrderService { store }
    }

    /// Places an order under `context` (its correlation id reaches every event the handlers
    /// write about it); answers the position of its event.
    pub async fn place(
        &self,
        order: OrderPlaced,
        context: &Context,
    ) -> Result<Position, OrderError> {
        if order.lines.is_empty() {
            return Err(OrderError::Empty(order.order_id));
        }
        if let Some(line) = order.lines.iter().find(|l| l.quantity == 0) {
            return Err(OrderError::ZeroQuantity {
                sku: line.sku.clone(),
                order_id: order.order_id,
            });
        }
        let stream = StreamName::new(format!("order-{}", order.order_id)).map_err(|e| {
            OrderError::InvalidId {
                order_id: order.order_id.clone(),
                reason: e.to_string(),
            }
        })?;
        let order_id = order.order_id.clone();
        let event = encode_event(&OrderEvent::Placed(order), Codec::Json, context)?;
        match self
            .store
            .append(&stream, ExpectedRevision::NoStream, vec![event])
            .await
        {
            Ok(r) => Ok(r.last_position),
            Err(StoreError::WrongExpectedRevision { .. }) => {
                Err(OrderError::AlreadyPlaced(order_id))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// An email the email handler sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    /// The customer.
    pub to: String,
    /// The subject.
    pub subject: String,
}

/// Sends an order confirmation per order (here: into a list).
#[derive(Debug, Default)]
pub struct EmailHandler {
    sent: Mutex<Vec<Email>>,
}

impl EmailHandler {
    /// The emails sent so far.
    pub fn sent(&self) -> Vec<Email> {
        self.sent.lock().clone()
    }
}

#[async_trait::async_trait]
impl EventHandler<OrderEvent> for EmailHandler {
    fn name(&self) -> &str {
        "email"
    }

    async fn handle(&self, envelope: &Envelope<OrderEvent>) -> Result<(), BoxError> {
        let OrderEvent::Placed(order) = &envelope.event;
        self.sent.lock().push(Email {
            to: order.customer_id.clone(),
            subject: format!(
                "Order {} confirmed: {}.{:02}",
                order.order_id,
                order.total_cents() / 100,
                order.total_cents() % 100
            ),
        });
        Ok(())
    }
}

/// Reserves stock per order and records it as `inventory.reserved` in `reservation-{order}`;
/// fails on SKUs it does not know ([`POISON_SKU`]).
pub struct InventoryHandler {
    store: Arc<dyn EventStore>,
    reserved: Mutex<BTreeMap<String, u64>>,
}

impl std::fmt::Debug for InventoryHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventoryHandler")
            .field("reserved", &*self.reserved.lock())
            .finish_non_exhaustive()
    }
}

impl InventoryHandler {
    /// Writing its reservations to `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        InventoryHandler {
            store,
            reserved: Mutex::new(BTreeMap::new()),
        }
    }

    /// Units reserved per SKU by this process.
    pub fn reserved(&self) -> BTreeMap<String, u64> {
        self.reserved.lock().clone()
    }
}

#[async_trait::async_trait]
impl EventHandler<OrderEvent> for InventoryHandler {
    fn name(&self) -> &str {
        "inventory"
    }

    async fn handle(&self, envelope: &Envelope<OrderEvent>) -> Result<(), BoxError> {
        let OrderEvent::Placed(order) = &envelope.event;
        if let Some(line) = order.lines.iter().find(|l| l.sku == POISON_SKU) {
            return Err(format!(
                "SKU {} of order {} is not in the catalogue",
                line.sku, order.order_id
            )
            .into());
        }
        let reservation = InventoryEvent::Reserved(StockReserved {
            order_id: order.order_id.clone(),
            lines: order
                .lines
                .iter()
                .map(|l| (l.sku.clone(), l.quantity))
                .collect(),
        });
        // The order's correlation id, this event as the cause.
        let event = encode_event(&reservation, Codec::Json, &envelope.context())?;
        let stream = StreamName::new(format!("reservation-{}", order.order_id))
            .map_err(|e| Permanent::new(e.to_string()))?;
        match self
            .store
            .append(&stream, ExpectedRevision::NoStream, vec![event])
            .await
        {
            Ok(_) => {
                let mut reserved = self.reserved.lock();
                for l in &order.lines {
                    *reserved.entry(l.sku.clone()).or_default() += u64::from(l.quantity);
                }
                Ok(())
            }
            // Reserved before (a redelivery): nothing to do again.
            Err(StoreError::WrongExpectedRevision { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Figures over every order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Analytics {
    /// Orders counted.
    pub orders: u64,
    /// Their total revenue, in cents.
    pub revenue_cents: u64,
    /// Units ordered per SKU.
    pub units_by_sku: BTreeMap<String, u64>,
}

/// Counts orders, revenue and units per SKU.
#[derive(Debug, Default)]
pub struct AnalyticsHandler {
    figures: Mutex<Analytics>,
}

impl AnalyticsHandler {
    /// The figures so far.
    pub fn figures(&self) -> Analytics {
        self.figures.lock().clone()
    }
}

#[async_trait::async_trait]
impl EventHandler<OrderEvent> for AnalyticsHandler {
    fn name(&self) -> &str {
        "analytics"
    }

    async fn handle(&self, envelope: &Envelope<OrderEvent>) -> Result<(), BoxError> {
        let OrderEvent::Placed(order) = &envelope.event;
        let mut f = self.figures.lock();
        f.orders += 1;
        f.revenue_cents = f.revenue_cents.saturating_add(order.total_cents());
        for l in &order.lines {
            *f.units_by_sku.entry(l.sku.clone()).or_default() += u64::from(l.quantity);
        }
        Ok(())
    }
}

/// One order as the customer query shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderSummary {
    /// The order.
    pub order_id: String,
    /// Its total, in cents.
    pub total_cents: u64,
    /// Units ordered, over all lines.
    pub units: u64,
    /// When it was placed.
    pub placed_at: Timestamp,
    /// Its place in `$all` (the order of placing).
    pub position: Position,
}

/// The read model of orders per customer, in memory (rebuilt from the start at each start).
#[derive(Debug, Default)]
pub struct CustomerOrders {
    by_customer: Mutex<HashMap<String, Vec<OrderSummary>>>,
}

impl CustomerOrders {
    /// The orders of `customer`, newest first.
    pub fn orders_of(&self, customer: &str) -> Vec<OrderSummary> {
        let mut orders = self
            .by_customer
            .lock()
            .get(customer)
            .cloned()
            .unwrap_or_default();
        orders.sort_by_key(|o| std::cmp::Reverse(o.position));
        orders
    }
}

#[async_trait::async_trait]
impl EventHandler<OrderEvent> for CustomerOrders {
    fn name(&self) -> &str {
        "customer-orders"
    }

    async fn handle(&self, envelope: &Envelope<OrderEvent>) -> Result<(), BoxError> {
        let OrderEvent::Placed(order) = &envelope.event;
        let mut by_customer = self.by_customer.lock();
        let orders = by_customer.entry(order.customer_id.clone()).or_default();
        // A redelivery replaces, never duplicates.
        orders.retain(|o| o.order_id != order.order_id);
        orders.push(OrderSummary {
            order_id: order.order_id.clone(),
            total_cents: order.total_cents(),
            units: order.lines.iter().map(|l| u64::from(l.quantity)).sum(),
            placed_at: envelope.timestamp,
            position: envelope.position,
        });
        Ok(())
    }
}

/// Where the email, inventory and analytics handlers read the orders from: the store (each
/// with its checkpoint there), or a topic on a message broker that a relay fills from the store
/// (each a consumer group of that topic).
#[derive(Clone, Debug)]
pub enum HandlersOn {
    /// On the store, each handler with its own checkpoint.
    Store,
    /// On a broker, each handler a consumer group of the topic.
    Broker(Broker),
}

/// A topic on a message broker, and the prefix of the handlers' consumer groups there
/// (`{prefix}-email`, `{prefix}-inventory`, `{prefix}-analytics`).
#[derive(Clone)]
pub struct Broker {
    /// The broker.
    pub transport: Arc<dyn Transport>,
    /// The topic the orders are published to.
    pub topic: Topic,
    /// The prefix of the consumer groups' names.
    pub group_prefix: String,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("topic", &self.topic)
            .field("group_prefix", &self.group_prefix)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// The consumer group of the handler named `handler`.
    pub fn group(&self, handler: &str) -> Result<ConsumerGroup, TransportError> {
        ConsumerGroup::new(format!("{}-{handler}", self.group_prefix))
    }

    /// Creates the email, inventory and analytics groups (a subscriber opened and closed with
    /// the settings their runners use with `retry`), so the broker keeps for each everything
    /// published from now on: a broker that routes to existing groups only (RabbitMQ's queues
    /// bound to the exchange) drops what is published before a group exists.
    pub async fn create_groups(&self, retry: &RetryPolicy) -> Result<(), TransportError> {
        let settings = SubscribeSettings {
            max_deliveries: retry.max_deliveries(),
            // These subscribers take no delivery; a short ack timeout is a short Kafka
            // session, which a coordinator may wait out after they leave before the
            // handlers' own members join (librdkafka's mock cluster waits the session
            // timeout less a second after any member leaves).
            ack_timeout: std::time::Duration::from_secs(6),
            ..SubscribeSettings::default()
        };
        for handler in ["email", "inventory", "analytics"] {
            self.transport
                .subscribe(&self.topic, &self.group(handler)?, &settings)
                .await?
                .close()
                .await?;
        }
        Ok(())
    }
}

/// Where the inventory handler's dead letters are.
#[derive(Debug)]
enum DeadLettersOn {
    Store(DeadLetters),
    Broker(Broker),
}

/// The orders application: the service, the three handlers and the read model. The handlers
/// run on the store with their own checkpoints, or as consumer groups on a broker
/// ([`HandlersOn`]); the in-memory read model always follows the store.
#[derive(Debug)]
pub struct Orders {
    /// Places orders.
    pub service: OrderService,
    /// The email handler.
    pub email: Arc<EmailHandler>,
    /// The inventory handler.
    pub inventory: Arc<InventoryHandler>,
    /// The analytics handler.
    pub analytics: Arc<AnalyticsHandler>,
    /// The customer read model.
    pub customer_orders: Arc<CustomerOrders>,
    dead_letters: DeadLettersOn,
    /// The runners with a checkpoint in the store.
    running: Vec<RunningHandler>,
    /// The runners that are consumer groups on a broker (no checkpoint of their own).
    brokered: Vec<RunningHandler>,
}

impl Orders {
    /// Starts the handlers over `store`. The three handlers keep their checkpoints in
    /// `checkpoints` (so a restart continues where each was); the in-memory read model keeps
    /// its own in memory and rebuilds from the start.
    pub fn start(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        retry: RetryPolicy,
    ) -> Orders {
        Orders::launch(store, checkpoints, retry, None)
    }

    /// Starts the handlers as `on` says: on `store` (with their checkpoints in `checkpoints`),
    /// or as consumer groups of a broker's topic (`checkpoints` unused; the broker keeps their
    /// places and `retry` is its backoff and deliveries, after which it dead-letters). The
    /// service appends to `store` and the read model follows it either way. An error only when
    /// a consumer group's name is not valid.
    pub fn start_on(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        retry: RetryPolicy,
        on: &HandlersOn,
    ) -> Result<Orders, TransportError> {
        let broker = match on {
            HandlersOn::Store => None,
            HandlersOn::Broker(broker) => Some((
                broker,
                [
                    broker.group("email")?,
                    broker.group("inventory")?,
                    broker.group("analytics")?,
                ],
            )),
        };
        Ok(Orders::launch(store, checkpoints, retry, broker))
    }

    fn launch(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        retry: RetryPolicy,
        broker: Option<(&Broker, [ConsumerGroup; 3])>,
    ) -> Orders {
        let email = Arc::new(EmailHandler::default());
        let inventory = Arc::new(InventoryHandler::new(store.clone()));
        let analytics = Arc::new(AnalyticsHandler::default());
        let customer_orders = Arc::new(CustomerOrders::default());
        let run = |handler: Arc<dyn EventHandler<OrderEvent>>, checkpoints| {
            HandlerRunner::new(store.clone(), checkpoints, handler)
                .category("order")
                .upcasters(upcasters())
                .retry(retry.clone())
                .spawn()
        };
        let handlers: [Arc<dyn EventHandler<OrderEvent>>; 3] =
            [email.clone(), inventory.clone(), analytics.clone()];
        let mut running = Vec::new();
        let mut brokered = Vec::new();
        let dead_letters = match broker {
            None => {
                for handler in handlers {
                    running.push(run(handler, checkpoints.clone()));
                }
                DeadLettersOn::Store(DeadLetters::new(store.clone()))
            }
            Some((broker, groups)) => {
                for (handler, group) in handlers.into_iter().zip(groups) {
                    brokered.push(
                        TransportRunner::new(
                            broker.transport.clone(),
                            broker.topic.clone(),
                            group,
                            handler,
                        )
                        .upcasters(upcasters())
                        .retry(retry.clone())
                        .spawn(),
                    );
                }
                DeadLettersOn::Broker(broker.clone())
            }
        };
        running.push(run(
            customer_orders.clone(),
            Arc::new(InMemoryCheckpoints::new()),
        ));
        Orders {
            service: OrderService::new(store),
            email,
            inventory,
            analytics,
            customer_orders,
            dead_letters,
            running,
            brokered,
        }
    }

    /// Waits until every handler on the store finished everything up to `position` (for
    /// handlers on a broker, [`Orders::caught_up_to`]).
    pub async fn caught_up(&mut self, position: Position) -> Result<(), RunnerError> {
        for r in &mut self.running {
            r.wait_for_checkpoint(position).await?;
        }
        Ok(())
    }

    /// Waits until every handler finished everything up to `position`, the position of the
    /// `orders`-th order event: the runners on the store by their checkpoints, those on a
    /// broker by the events they handled or dead-lettered.
    pub async fn caught_up_to(
        &mut self,
        position: Position,
        orders: u64,
    ) -> Result<(), RunnerError> {
        for r in &mut self.brokered {
            r.wait_until(|s| s.handled + s.dead_lettered >= orders)
                .await?;
        }
        self.caught_up(position).await
    }

    /// What each handler did, by name.
    pub fn stats(&self) -> Vec<(String, HandlerStats)> {
        self.brokered
            .iter()
            .chain(&self.running)
            .map(|r| (r.name().to_owned(), r.stats()))
            .collect()
    }

    /// The orders the inventory handler gave up on (at most 100 from a broker).
    pub async fn inventory_dead_letters(&self) -> anyhow::Result<Vec<DeadLetter>> {
        match &self.dead_letters {
            DeadLettersOn::Store(d) => Ok(d.list(self.inventory.name()).await?),
            DeadLettersOn::Broker(broker) => {
                let group = broker.group(self.inventory.name())?;
                let letters = broker
                    .transport
                    .dead_letters(&broker.topic, &group, 100)
                    .await?;
                letters
                    .into_iter()
                    .map(|l| {
                        Ok(DeadLetter {
                            handler: self.inventory.name().to_owned(),
                            original: wire::decode(&l.message)?,
                            error: l.reason,
                            attempts: l.attempts,
                            position: None,
                        })
                    })
                    .collect()
            }
        }
    }

    /// Stops every handler (each on the store saves its checkpoint).
    pub async fn stop(self) -> Result<(), RunnerError> {
        for r in self.brokered.into_iter().chain(self.running) {
            r.stop().await?;
        }
        Ok(())
    }
}

pub mod demo;
