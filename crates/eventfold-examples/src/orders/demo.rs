//! The program `cargo run --example orders` runs, on whichever store it is handed: place some
//! orders (one written by the first release as `order.placed` version 1, one with the poisoned
//! SKU), let the email, inventory and analytics handlers react independently, then show what
//! each did, the orders of one customer newest first, and the order the inventory
//! dead-lettered. It writes its report to `out` and returns what it showed, so a test can run
//! it on any store and check the outcome.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use eventfold::core::{EventFilter, EventStore, ExpectedRevision, StreamName};
use eventfold::{Context, DeadLetter, HandlerStats, RetryPolicy, StoreCheckpoints};

use eventfold_relay::{Relay, RelayConfig, RelayName};

use super::{
    Analytics, Email, HandlersOn, OrderLine, OrderPlaced, OrderPlacedV1, OrderSummary, Orders,
    POISON_SKU, legacy_v1_event,
};

/// How long the handlers may take to handle the example's orders.
const CATCH_UP: Duration = Duration::from_secs(60);

/// What the demo showed.
#[derive(Clone, Debug)]
pub struct DemoOutcome {
    /// The confirmations the email handler sent, in order.
    pub emails: Vec<Email>,
    /// Units the inventory reserved per SKU.
    pub reserved: BTreeMap<String, u64>,
    /// The analytics handler's figures.
    pub analytics: Analytics,
    /// The orders of customer `ann`, newest first.
    pub orders_of_ann: Vec<OrderSummary>,
    /// The orders the inventory handler gave up on.
    pub dead_letters: Vec<DeadLetter>,
    /// What each handler did, by name.
    pub stats: Vec<(String, HandlerStats)>,
}

fn line(sku: &str, quantity: u32, unit_price_cents: u64) -> OrderLine {
    OrderLine {
        sku: sku.into(),
        quantity,
        unit_price_cents,
    }
}

fn cents(c: u64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

/// Runs the demo on `store`, which must hold no orders yet (the order ids are fixed), writing
/// the report to `out`. Its handlers keep their checkpoints in `store` and are stopped before
/// it returns.
pub async fn run(store: Arc<dyn EventStore>, out: &mut dyn Write) -> anyhow::Result<DemoOutcome> {
    run_on(store, &HandlersOn::Store, out).await
}

/// Runs the demo on `store` with the email, inventory and analytics handlers where `on` says.
/// On a broker, a relay (`relay-checkpoint-{group prefix}` in `store`) publishes the orders'
/// events (category `order`) to the topic while the demo runs; each handler is a consumer
/// group of it, and the inventory's dead letters are the broker's. The outcome is the same as
/// on the store (the dead letters have no position in the store).
pub async fn run_on(
    store: Arc<dyn EventStore>,
    on: &HandlersOn,
    out: &mut dyn Write,
) -> anyhow::Result<DemoOutcome> {
    // An order the first release wrote: `order.placed` schema version 1, item ids only. Every
    // handler reads it through the upcaster as version 2 (one unit of each, no price known).
    let legacy = OrderPlacedV1 {
        order_id: "o-0999".into(),
        customer_id: "ann".into(),
        item_ids: vec!["BOOK-1".into(), "TEA-3".into()],
    };
    store
        .append(
            &StreamName::new("order-o-0999")?,
            ExpectedRevision::NoStream,
            vec![legacy_v1_event(&legacy, &Context::new())?],
        )
        .await
        .context(
            "append the first release's order o-0999 (the example places fixed order ids: \
             run it on an empty store, e.g. a new PostgreSQL database)",
        )?;
    writeln!(
        out,
        "appended o-0999 for ann as order.placed version 1 (item ids only)"
    )?;

    // The handlers start after it and read it from the start like any other order. Quick
    // retries so the example ends fast: 3 attempts, 10 ms then 20 ms.
    let retry = RetryPolicy::new(3).initial_delay(Duration::from_millis(10));
    let relay = match on {
        HandlersOn::Store => None,
        HandlersOn::Broker(broker) => {
            broker.create_groups(&retry).await.context(
                "create the handlers' consumer groups on the broker given with --transport",
            )?;
            let config = RelayConfig::new(
                RelayName::new(broker.group_prefix.clone())?,
                broker.topic.clone(),
            )
            .filter(EventFilter {
                category: Some("order".into()),
                ..EventFilter::default()
            });
            let relay = Relay::new(store.clone(), broker.transport.clone(), config)?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(relay.run(async move {
                let _ = stopped.await;
            }));
            writeln!(
                out,
                "relaying the orders to topic {} (consumer groups {}-*)",
                broker.topic.as_str(),
                broker.group_prefix
            )?;
            Some((stop, task))
        }
    };
    let mut orders = Orders::start_on(
        store.clone(),
        Arc::new(StoreCheckpoints::new(store.clone())),
        retry,
        on,
    )?;

    let placed = [
        ("o-1001", "ann", vec![line("BOOK-1", 2, 1250)]),
        (
            "o-1002",
            "bob",
            vec![line("MUG-7", 1, 899), line("TEA-3", 3, 450)],
        ),
        (
            "o-1003",
            "ann",
            vec![line(POISON_SKU, 1, 100), line("MUG-7", 1, 899)],
        ),
        ("o-1004", "ann", vec![line("TEA-3", 10, 450)]),
    ];
    let mut last = None;
    for (order_id, customer_id, lines) in placed {
        let ctx = Context::with_correlation_id(format!("checkout-{order_id}"));
        let order = OrderPlaced {
            order_id: order_id.into(),
            customer_id: customer_id.into(),
            lines,
        };
        last = Some(orders.service.place(order, &ctx).await?);
        writeln!(out, "placed {order_id} for {customer_id}")?;
    }
    let last = last.context("no order was placed")?;

    // Five order events: o-0999 and the four above.
    // Generous: a broker's consumer groups first join (Kafka rebalances), and the poisoned
    // order is retried with backoff before it is dead-lettered.
    let caught_up = tokio::time::timeout(CATCH_UP, orders.caught_up_to(last, 5)).await;
    if let Ok(handlers) = caught_up {
        handlers?;
    } else {
        let progress: Vec<String> = orders
            .stats()
            .iter()
            .map(|(name, s)| format!("{name}: {}", did(s)))
            .collect();
        anyhow::bail!(
            "the handlers did not catch up with the 5 orders within {} s ({})",
            CATCH_UP.as_secs(),
            progress.join("; ")
        );
    }

    let outcome = DemoOutcome {
        emails: orders.email.sent(),
        reserved: orders.inventory.reserved(),
        analytics: orders.analytics.figures(),
        orders_of_ann: orders.customer_orders.orders_of("ann"),
        dead_letters: orders.inventory_dead_letters().await?,
        stats: orders.stats(),
    };
    orders.stop().await?;
    if let Some((stop, task)) = relay {
        let _ = stop.send(());
        task.await.context("the relay's task failed")??;
    }

    writeln!(out, "\nwhat each handler did:")?;
    for (name, s) in &outcome.stats {
        writeln!(out, "  {name:<16} {}", did(s))?;
    }
    writeln!(out, "\nemail sent:")?;
    for email in &outcome.emails {
        writeln!(out, "  to {}: {}", email.to, email.subject)?;
    }
    writeln!(out, "\ninventory reserved:")?;
    for (sku, units) in &outcome.reserved {
        writeln!(out, "  {sku}: {units}")?;
    }
    writeln!(
        out,
        "\nanalytics: {} orders, revenue {}",
        outcome.analytics.orders,
        cents(outcome.analytics.revenue_cents)
    )?;
    writeln!(out, "\norders of ann, newest first:")?;
    for o in &outcome.orders_of_ann {
        writeln!(
            out,
            "  {} total {} ({} units)",
            o.order_id,
            cents(o.total_cents),
            o.units
        )?;
    }
    match on {
        HandlersOn::Store => writeln!(
            out,
            "\ndead-lettered by inventory (stream deadletter-inventory):"
        )?,
        HandlersOn::Broker(broker) => writeln!(
            out,
            "\ndead-lettered by inventory (dead letters of group {}-inventory on the broker):",
            broker.group_prefix
        )?,
    }
    for letter in &outcome.dead_letters {
        writeln!(
            out,
            "  {} in {} after {} attempts: {}",
            letter.original.id, letter.original.stream, letter.attempts, letter.error
        )?;
    }
    Ok(outcome)
}

/// What a handler did, as the report and a catch-up timeout say it.
fn did(s: &HandlerStats) -> String {
    format!(
        "handled {}, failed attempts {}, dead-lettered {}",
        s.handled, s.failed_attempts, s.dead_lettered
    )
}
