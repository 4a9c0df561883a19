//! Orders on the embedded engine, or on PostgreSQL: place some orders (one with the poisoned
//! SKU), let the email, inventory and analytics handlers react independently, then show what
//! each did, the orders of one customer newest first, and the order the inventory
//! dead-lettered. The program is `eventfold_examples::orders::demo::run_on`; this file picks the
//! store (a `dyn EventStore`) and where the handlers run: on the store, or with `--transport`
//! as three consumer groups on a broker (a `dyn Transport`) that a relay publishes the orders to.
//!
//! ```text
//! cargo run -p eventfold-examples --example orders
//! cargo run -p eventfold-examples --example orders -- --store postgres://postgres@127.0.0.1/orders
//! cargo run -p eventfold-examples --example orders -- --transport redis://127.0.0.1:6379
//! cargo run -p eventfold-examples --example orders -- --transport amqp://127.0.0.1:5672
//! cargo run -p eventfold-examples --example orders -- --transport kafka://127.0.0.1:9092
//! cargo run -p eventfold-examples --example orders -- --transport nats://127.0.0.1:4222
//! cargo run -p eventfold-examples --example orders -- --transport memory
//! ```
//!
//! On a broker the topic and consumer groups are named after the process id and the time
//! (`orders-{pid}-{secs}`), so each run starts from nothing.
//!
//! The embedded store lives in a temporary directory removed at exit. On PostgreSQL the events
//! stay in the database (schema `eventfold`); the order ids are fixed, so give an empty
//! database each run.

use std::sync::Arc;

use anyhow::Context as _;
use eventfold::core::EventStore;
use eventfold::transport::Topic;
use eventfold_engine::{Engine, EngineOptions};
use eventfold_examples::orders::demo;
use eventfold_examples::orders::{Broker, HandlersOn};
use eventfold_examples::store::{StoreArg, open_postgres};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (args, transport) = eventfold_examples::transport::split(std::env::args().skip(1))?;
    let on = match transport {
        None => HandlersOn::Store,
        Some(url) => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let name = format!("orders-{}-{secs}", std::process::id());
            HandlersOn::Broker(Broker {
                transport: url.connect().await?,
                topic: Topic::new(name.clone())?,
                group_prefix: name,
            })
        }
    };
    match StoreArg::parse(args, "orders")? {
        StoreArg::Embedded => {
            let dir = tempfile::tempdir().context("create a temporary directory")?;
            let data = dir.path().join("data");
            let engine =
                tokio::task::spawn_blocking(move || Engine::open(data, EngineOptions::default()))
                    .await
                    .context("the engine's open task failed")?
                    .context("open the embedded engine")?;
            let store: Arc<dyn EventStore> = Arc::new(engine.clone());
            demo::run_on(store, &on, &mut std::io::stdout()).await?;
            tokio::task::spawn_blocking(move || engine.shutdown())
                .await
                .context("the engine's shutdown task failed")?;
        }
        StoreArg::Postgres(url) => {
            let store: Arc<dyn EventStore> = Arc::new(open_postgres(&url).await?);
            demo::run_on(store, &on, &mut std::io::stdout()).await?;
        }
    }
    Ok(())
}
