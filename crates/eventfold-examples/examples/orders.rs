//! Orders on the embedded engine, or on PostgreSQL: place some orders (one with the poisoned
//! SKU), let the email, inventory and analytics handlers react independently, then show what
//! each did, the orders of one customer newest first, and the order the inventory
//! dead-lettered. The program is `eventfold_examples::orders::demo::run`; this file picks the
//! store and hands it over as a `dyn EventStore`.
//!
//! ```text
//! cargo run -p eventfold-examples --example orders
//! cargo run -p eventfold-examples --example orders -- --store postgres://postgres@127.0.0.1/orders
//! ```
//!
//! The embedded store lives in a temporary directory removed at exit. On PostgreSQL the events
//! stay in the database (schema `eventfold`); the order ids are fixed, so give an empty
//! database each run.

use std::sync::Arc;

use anyhow::Context as _;
use eventfold::core::EventStore;
use eventfold_engine::{Engine, EngineOptions};
use eventfold_examples::orders::demo;
use eventfold_examples::store::{StoreArg, open_postgres};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match StoreArg::parse(std::env::args().skip(1), "orders")? {
        StoreArg::Embedded => {
            let dir = tempfile::tempdir().context("create a temporary directory")?;
            let data = dir.path().join("data");
            let engine =
                tokio::task::spawn_blocking(move || Engine::open(data, EngineOptions::default()))
                    .await
                    .context("the engine's open task failed")?
                    .context("open the embedded engine")?;
            let store: Arc<dyn EventStore> = Arc::new(engine.clone());
            demo::run(store, &mut std::io::stdout()).await?;
            tokio::task::spawn_blocking(move || engine.shutdown())
                .await
                .context("the engine's shutdown task failed")?;
        }
        StoreArg::Postgres(url) => {
            let store: Arc<dyn EventStore> = Arc::new(open_postgres(&url).await?);
            demo::run(store, &mut std::io::stdout()).await?;
        }
    }
    Ok(())
}
