//! The registration saga on the embedded engine: one registration that completes, one whose
//! league is full (the profile is deleted, the registration marked failed), and one whose
//! profile never comes (the timeout fires and compensates).
//!
//! ```text
//! cargo run -p eventfold-examples --example registration_saga
//! ```
//!
//! The store lives in a temporary directory removed at exit.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use eventfold::core::EventStore;
use eventfold::{Context, SagaManager};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_examples::registration_saga::{
    Outcome, RegistrationSaga, Services, history, outcome, register,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("create a temporary directory")?;
    let store: Arc<dyn EventStore> = Arc::new(
        Engine::open(dir.path(), EngineOptions::default()).context("open the event store")?,
    );

    // The league holds one player: the second registration cannot join it.
    let services = Services::new(store.clone(), 1);
    services.stall_profiles_of("Carol");
    let saga = RegistrationSaga {
        default_league: "rookies".into(),
        profile_timeout: Duration::from_millis(300),
    };
    let manager = SagaManager::new(saga, store.clone(), services);
    let saga_task = tokio::spawn(manager.run());

    let runs = [
        ("r-alice", "Alice", "alice@example.com"),
        ("r-bob", "Bob", "bob@example.com"),
        ("r-carol", "Carol", "carol@example.com"),
    ];
    let mut failed = 0;
    for (id, name, email) in runs {
        let context = Context::new().user(name.to_lowercase());
        println!(
            "== registration {id} ({name}), correlation id {}",
            context.correlation_id
        );
        register(&*store, id, name, email, &context).await?;
        let result = tokio::time::timeout(Duration::from_secs(10), outcome(&*store, id))
            .await
            .context("the registration did not finish within 10 s")??;
        for (event_type, stream) in history(&*store, &context.correlation_id).await? {
            println!("   {event_type:<42} in {stream}");
        }
        match result {
            Outcome::Completed => println!("   => completed"),
            Outcome::Failed(reason) => {
                failed += 1;
                println!("   => failed and compensated: {reason}");
            }
        }
    }
    if failed != 2 {
        bail!("expected the 2nd and 3rd registrations to fail, {failed} failed");
    }
    saga_task.abort();
    Ok(())
}
