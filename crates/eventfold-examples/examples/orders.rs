//! Orders on the embedded engine: place some orders (one with the poisoned SKU), let the
//! email, inventory and analytics handlers react independently, then show what each did, the
//! orders of one customer newest first, and the order the inventory dead-lettered.
//!
//! ```text
//! cargo run -p eventfold-examples --example orders
//! ```
//!
//! The store lives in a temporary directory removed at exit.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use eventfold::core::{EventStore, ExpectedRevision, StreamName};
use eventfold::{Context, RetryPolicy, StoreCheckpoints};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_examples::orders::{
    OrderLine, OrderPlaced, OrderPlacedV1, Orders, POISON_SKU, legacy_v1_event,
};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("create a temporary directory")?;
    let data = dir.path().join("data");
    let engine = tokio::task::spawn_blocking(move || Engine::open(data, EngineOptions::default()))
        .await
        .context("the engine's open task failed")?
        .context("open the embedded engine")?;
    let store: Arc<dyn EventStore> = Arc::new(engine.clone());

    // Quick retries so the example ends fast: 3 attempts, 10 ms then 20 ms.
    let retry = RetryPolicy::new(3).initial_delay(Duration::from_millis(10));
    let mut orders = Orders::start(
        store.clone(),
        Arc::new(StoreCheckpoints::new(store.clone())),
        retry,
    );

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
        .await?;
    println!("appended o-0999 for ann as order.placed version 1 (item ids only)");

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
        println!("placed {order_id} for {customer_id}");
    }
    let last = last.context("no order was placed")?;

    tokio::time::timeout(Duration::from_secs(30), orders.caught_up(last))
        .await
        .context("the handlers did not catch up within 30 s")??;

    println!("\nwhat each handler did:");
    for (name, s) in orders.stats() {
        println!(
            "  {name:<16} handled {}, failed attempts {}, dead-lettered {}",
            s.handled, s.failed_attempts, s.dead_lettered
        );
    }
    println!("\nemail sent:");
    for email in orders.email.sent() {
        println!("  to {}: {}", email.to, email.subject);
    }
    println!("\ninventory reserved:");
    for (sku, units) in orders.inventory.reserved() {
        println!("  {sku}: {units}");
    }
    let figures = orders.analytics.figures();
    println!(
        "\nanalytics: {} orders, revenue {}",
        figures.orders,
        cents(figures.revenue_cents)
    );

    println!("\norders of ann, newest first:");
    for o in orders.customer_orders.orders_of("ann") {
        println!(
            "  {} total {} ({} units)",
            o.order_id,
            cents(o.total_cents),
            o.units
        );
    }

    println!("\ndead-lettered by inventory (stream deadletter-inventory):");
    for letter in orders.inventory_dead_letters().await? {
        println!(
            "  {} in {} after {} attempts: {}",
            letter.original.id, letter.original.stream, letter.attempts, letter.error
        );
    }

    orders.stop().await?;
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .context("the engine's shutdown task failed")?;
    Ok(())
}
