//! The orders domain on the embedded engine: independent handlers, the customer query, the
//! poisoned order dead-lettered while the rest flows, restarts from each handler's checkpoint.

use std::sync::Arc;
use std::time::Duration;

use eventfold::core::{EventStore, ExpectedRevision, Position, ReadStream, StreamName};
use eventfold::{Context, RetryPolicy, StoreCheckpoints, Upcasters};
use eventfold_examples::orders::{
    InventoryEvent, OrderError, OrderEvent, OrderLine, OrderPlaced, OrderPlacedV1, Orders,
    POISON_SKU, legacy_v1_event, upcasters,
};

use crate::support::{engine_in, read, temp_store};

fn order(id: &str, customer: &str, lines: &[(&str, u32, u64)]) -> OrderPlaced {
    OrderPlaced {
        order_id: id.into(),
        customer_id: customer.into(),
        lines: lines
            .iter()
            .map(|(sku, quantity, unit_price_cents)| OrderLine {
                sku: (*sku).into(),
                quantity: *quantity,
                unit_price_cents: *unit_price_cents,
            })
            .collect(),
    }
}

fn retry() -> RetryPolicy {
    RetryPolicy::new(3)
        .initial_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
}

async fn caught_up(orders: &mut Orders, position: Position) {
    tokio::time::timeout(Duration::from_secs(20), orders.caught_up(position))
        .await
        .expect("the handlers catch up")
        .unwrap();
}

#[tokio::test]
async fn handlers_react_independently_and_the_poisoned_order_is_dead_lettered() {
    let (_dir, store) = temp_store();
    let mut orders = Orders::start(
        store.clone(),
        Arc::new(StoreCheckpoints::new(store.clone())),
        retry(),
    );
    let ctx = Context::with_correlation_id("checkout-42");
    let svc = orders.service.clone();
    svc.place(order("o-1", "ann", &[("BOOK", 2, 1000)]), &Context::new())
        .await
        .unwrap();
    svc.place(order("o-2", "ann", &[(POISON_SKU, 1, 5)]), &Context::new())
        .await
        .unwrap();
    svc.place(order("o-3", "bob", &[("MUG", 1, 700)]), &ctx)
        .await
        .unwrap();
    let last = svc
        .place(order("o-4", "ann", &[("MUG", 3, 700)]), &Context::new())
        .await
        .unwrap();
    caught_up(&mut orders, last).await;

    // Email and analytics saw every order, the poisoned one too.
    let subjects: Vec<String> = orders.email.sent().into_iter().map(|e| e.subject).collect();
    assert_eq!(subjects.len(), 4);
    assert!(subjects[1].starts_with("Order o-2 confirmed"));
    let figures = orders.analytics.figures();
    assert_eq!(figures.orders, 4);
    assert_eq!(figures.revenue_cents, 2000 + 5 + 700 + 2100);

    // The inventory reserved everything but the poisoned order, which is dead-lettered.
    let reserved: Vec<(String, u64)> = orders.inventory.reserved().into_iter().collect();
    assert_eq!(reserved, [("BOOK".into(), 2), ("MUG".into(), 4)]);
    let letters = orders.inventory_dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].original.stream.as_str(), "order-o-2");
    assert_eq!(letters[0].attempts, 3);
    assert!(letters[0].error.contains("not in the catalogue"));
    let stats = orders.stats();
    let inventory = &stats.iter().find(|(n, _)| n == "inventory").unwrap().1;
    assert_eq!((inventory.handled, inventory.dead_lettered), (3, 1));

    // The reservation carries the order's correlation id and names the order as its cause.
    let reservation = read(&*store, "reservation-o-3", ReadStream::forward(1)).await;
    let reservation = Upcasters::new()
        .decode::<InventoryEvent>(reservation[0].clone())
        .unwrap();
    assert_eq!(reservation.correlation_id(), Some("checkout-42"));
    let placed = read(&*store, "order-o-3", ReadStream::forward(1)).await;
    assert_eq!(
        reservation.causation_id(),
        Some(placed[0].id.to_string().as_str())
    );

    // The customer query: newest first.
    let ann: Vec<(String, u64)> = orders
        .customer_orders
        .orders_of("ann")
        .into_iter()
        .map(|o| (o.order_id, o.total_cents))
        .collect();
    assert_eq!(
        ann,
        [
            ("o-4".into(), 2100),
            ("o-2".into(), 5),
            ("o-1".into(), 2000)
        ]
    );
    assert!(orders.customer_orders.orders_of("nobody").is_empty());
    orders.stop().await.unwrap();
}

#[tokio::test]
async fn after_a_restart_each_handler_continues_from_its_own_checkpoint() {
    let (_dir, store) = temp_store();
    let checkpoints = Arc::new(StoreCheckpoints::new(store.clone()));
    let mut orders = Orders::start(store.clone(), checkpoints.clone(), retry());
    let first = orders
        .service
        .place(order("o-1", "ann", &[("BOOK", 1, 1000)]), &Context::new())
        .await
        .unwrap();
    caught_up(&mut orders, first).await;
    orders.stop().await.unwrap();

    let mut orders = Orders::start(store.clone(), checkpoints, retry());
    let second = orders
        .service
        .place(order("o-2", "ann", &[("MUG", 1, 700)]), &Context::new())
        .await
        .unwrap();
    caught_up(&mut orders, second).await;
    // The email handler continued after o-1: no second confirmation of it.
    let subjects: Vec<String> = orders.email.sent().into_iter().map(|e| e.subject).collect();
    assert_eq!(subjects, ["Order o-2 confirmed: 7.00"]);
    assert_eq!(orders.analytics.figures().orders, 1);
    // The in-memory read model rebuilt from the start and knows both orders.
    assert_eq!(orders.customer_orders.orders_of("ann").len(), 2);
    orders.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_and_duplicate_orders_are_refused() {
    let (_dir, store) = temp_store();
    let svc = eventfold_examples::orders::OrderService::new(store);
    let ctx = Context::new();
    assert!(matches!(
        svc.place(order("o-1", "ann", &[]), &ctx).await,
        Err(OrderError::Empty(_))
    ));
    assert!(matches!(
        svc.place(order("o-1", "ann", &[("BOOK", 0, 1)]), &ctx)
            .await,
        Err(OrderError::ZeroQuantity { .. })
    ));
    assert!(matches!(
        svc.place(order("o\n1", "ann", &[("BOOK", 1, 1)]), &ctx)
            .await,
        Err(OrderError::InvalidId { .. })
    ));
    svc.place(order("o-1", "ann", &[("BOOK", 1, 1)]), &ctx)
        .await
        .unwrap();
    let err = svc
        .place(order("o-1", "bob", &[("MUG", 1, 1)]), &ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, OrderError::AlreadyPlaced(_)), "{err}");
    assert!(err.to_string().contains("use a new order id"));
}

/// The same inventory handler as a consumer of a real server's consumer group (the server's
/// router, engine and groups in-process on a random port): the poisoned order ends parked
/// while the rest is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_server_consumer_group_the_poisoned_order_ends_parked() {
    use eventfold::GroupRunner;
    use eventfold::client::Client;
    use eventfold_examples::orders::{InventoryHandler, OrderService};

    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(&dir.path().join("data"));
    let state = engine_in(&dir.path().join("groups"));
    let groups = eventfold_groups::Groups::open(Arc::new(engine.clone()), Arc::new(state.clone()))
        .await
        .unwrap();
    let app = eventfold_server::AppState::new(
        Arc::new(engine.clone()),
        eventfold_server::ServerLimits::default(),
    )
    .with_groups(groups.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(eventfold_server::serve(listener, app, async move {
        let _ = stop_rx.await;
    }));

    let client = Client::new(&url, None).unwrap();
    client
        .put_group(
            "inventory",
            &serde_json::from_value::<eventfold::client::GroupSettings>(serde_json::json!({
                "filter": {"category": "order"},
                "start": "start",
                "max_deliveries": 3,
                "retry_backoff": {"initial_ms": 5, "max_ms": 20, "multiplier": 2.0},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    // Orders placed and reservations written through the server, like a remote service.
    let remote: Arc<dyn EventStore> = Arc::new(client.clone());
    let svc = OrderService::new(remote.clone());
    for (id, sku) in [("o-1", "BOOK"), ("o-2", POISON_SKU), ("o-3", "MUG")] {
        svc.place(order(id, "ann", &[(sku, 1, 100)]), &Context::new())
            .await
            .unwrap();
    }
    let inventory = Arc::new(InventoryHandler::new(remote));
    let mut running = GroupRunner::new(client.clone(), "inventory", inventory.clone())
        .pull_wait(Duration::from_millis(200))
        .spawn();
    tokio::time::timeout(
        Duration::from_secs(20),
        running.wait_until(|s| s.handled == 2 && s.failed_attempts == 3),
    )
    .await
    .unwrap()
    .unwrap();
    let parked = tokio::time::timeout(Duration::from_secs(20), async {
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
    assert_eq!(parked[0].event.stream.as_str(), "order-o-2");
    assert_eq!(parked[0].attempts, 3);
    assert!(parked[0].reason.contains("not in the catalogue"));
    let reserved: Vec<String> = inventory.reserved().into_keys().collect();
    assert_eq!(reserved, ["BOOK", "MUG"]);
    running.stop().await.unwrap();
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    groups.shutdown().await;
}

/// The same handlers in-process on the bus: each subscribed to `order.*`.
#[tokio::test]
async fn on_the_in_process_bus_the_same_handlers_react_and_the_poisoned_order_is_dead_lettered() {
    use eventfold::Bus;
    use eventfold_examples::orders::{EmailHandler, InventoryHandler, OrderEvent};

    let (_dir, store) = temp_store();
    let bus = Bus::recording(16);
    let email = Arc::new(EmailHandler::default());
    let inventory = Arc::new(InventoryHandler::new(store));
    let mut handlers = vec![
        bus.subscribe_handler::<OrderEvent, _>("order.*", email.clone(), retry())
            .unwrap(),
        bus.subscribe_handler::<OrderEvent, _>("order.*", inventory.clone(), retry())
            .unwrap(),
    ];
    for (id, sku) in [("o-1", "BOOK"), ("o-2", POISON_SKU), ("o-3", "MUG")] {
        let event = OrderEvent::Placed(order(id, "ann", &[(sku, 1, 100)]));
        bus.publish_event(&event, &Context::new()).await.unwrap();
    }
    for h in &mut handlers {
        tokio::time::timeout(
            Duration::from_secs(20),
            h.wait_until(|s| s.handled + s.dead_lettered == 3),
        )
        .await
        .unwrap()
        .unwrap();
    }
    assert_eq!(email.sent().len(), 3);
    let reserved: Vec<String> = inventory.reserved().into_keys().collect();
    assert_eq!(reserved, ["BOOK", "MUG"]);
    let letters = bus.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].handler, "inventory");
    assert_eq!(bus.recorded_topics(), ["order.placed"; 3]);
    for h in handlers {
        h.stop().await.unwrap();
    }
}

#[tokio::test]
async fn an_order_placed_v1_is_read_as_v2_by_every_handler() {
    let (_dir, store) = temp_store();
    let v1 = OrderPlacedV1 {
        order_id: "o-old".into(),
        customer_id: "ann".into(),
        item_ids: vec!["BOOK".into(), "MUG".into()],
    };
    let appended = store
        .append(
            &StreamName::new("order-o-old").unwrap(),
            ExpectedRevision::NoStream,
            vec![legacy_v1_event(&v1, &Context::with_correlation_id("legacy")).unwrap()],
        )
        .await
        .unwrap();

    // Stored as version 1, item ids only; read as version 2.
    let stored = read(store.as_ref(), "order-o-old", ReadStream::forward(10)).await;
    assert_eq!(stored[0].schema_version, 1);
    assert!(String::from_utf8_lossy(&stored[0].data).contains("item_ids"));
    let decoded = upcasters().decode::<OrderEvent>(stored[0].clone()).unwrap();
    let OrderEvent::Placed(placed) = decoded.event;
    assert_eq!(
        placed,
        order("o-old", "ann", &[("BOOK", 1, 0), ("MUG", 1, 0)])
    );
    assert!(
        Upcasters::new()
            .decode::<OrderEvent>(stored[0].clone())
            .is_err()
    );

    let mut orders = Orders::start(
        store.clone(),
        Arc::new(StoreCheckpoints::new(store.clone())),
        retry(),
    );
    caught_up(&mut orders, appended.last_position).await;
    let ann = orders.customer_orders.orders_of("ann");
    assert_eq!(ann.len(), 1);
    assert_eq!((ann[0].order_id.as_str(), ann[0].units), ("o-old", 2));
    let reserved: Vec<(String, u64)> = orders.inventory.reserved().into_iter().collect();
    assert_eq!(reserved, [("BOOK".into(), 1), ("MUG".into(), 1)]);
    assert_eq!(orders.email.sent().len(), 1);
    orders.stop().await.unwrap();
}
