//! The same framework code on a remote server: the repository (with snapshots and a conflict
//! retry) and a projection run over `eventfold_client::Client` against the real server code,
//! exactly as they run over the embedded engine in the other modules.

use std::sync::Arc;

use eventfold::client::Client;
use eventfold::core::EventStore;
use eventfold::{
    Aggregate, BoxError, Context, DomainEvent, Envelope, InMemoryReadModel, MemoryProjection,
    Projection, ProjectionProcessor, Repository, SnapshotAggregate, SnapshotPolicy,
};
use serde::{Deserialize, Serialize};

use crate::support::Server;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Added {
    n: u64,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "tally.")]
enum TallyEvent {
    Added(Added),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    total: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("a tally only adds positive numbers")]
struct Zero;

impl Aggregate for Tally {
    const CATEGORY: &'static str = "tally";
    type Event = TallyEvent;
    type Command = u64;
    type Error = Zero;

    fn apply(&mut self, TallyEvent::Added(a): &TallyEvent) {
        self.total += a.n;
    }

    fn handle(&self, n: u64) -> Result<Vec<TallyEvent>, Zero> {
        if n == 0 {
            return Err(Zero);
        }
        Ok(vec![TallyEvent::Added(Added { n })])
    }
}

impl SnapshotAggregate for Tally {
    const SNAPSHOT_VERSION: u32 = 1;
}

/// The sum of every tally, as a read model.
struct Sum;

impl Projection for Sum {
    type Event = TallyEvent;
    fn name(&self) -> &str {
        "sum"
    }
}

impl MemoryProjection for Sum {
    type State = u64;
    fn apply(&self, state: &mut u64, events: &[Envelope<TallyEvent>]) -> Result<(), BoxError> {
        for e in events {
            let TallyEvent::Added(a) = &e.event;
            *state += a.n;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_and_a_projection_run_unchanged_against_a_remote_server() {
    let server = Server::start().await;
    let remote: Arc<dyn EventStore> = Arc::new(Client::new(&server.url, None).unwrap());
    let tallies = Repository::<Tally>::new(remote.clone()).with_snapshots(SnapshotPolicy::every(4));
    let ctx = Context::with_correlation_id("remote-test");

    // Two writers race on one aggregate over HTTP: the loser reloads and decides again.
    let (a, b) = tokio::join!(
        tallies.execute("t-1", 1, &ctx),
        tallies.execute("t-1", 2, &ctx)
    );
    let mut attempts = vec![a.unwrap().attempts, b.unwrap().attempts];
    attempts.sort();
    assert!(attempts[0] == 1 && attempts[1] <= 2, "{attempts:?}");
    let mut last = None;
    for n in 3..=10 {
        last = tallies.execute("t-1", n, &ctx).await.unwrap().position;
    }
    let refused = tallies.execute("t-1", 0, &ctx).await.unwrap_err();
    assert!(refused.rejection().is_some(), "{refused}");

    // Loaded from a snapshot written through the server, then the events after it.
    let loaded = tallies.load("t-1").await.unwrap();
    assert_eq!(loaded.state.total, 55);
    assert!(loaded.snapshot_revision.is_some());
    assert!(loaded.events_applied < 4, "{loaded:?}");

    // A projection over the client's subscription: catch-up, then live.
    let model = InMemoryReadModel::new(Sum);
    let handle = ProjectionProcessor::new(remote.clone(), model.clone()).start();
    handle.wait_until(last.unwrap()).await.unwrap();
    assert_eq!(model.read(|s| *s), 55);
    let live = tallies
        .execute("t-2", 45, &ctx)
        .await
        .unwrap()
        .position
        .unwrap();
    handle.wait_until(live).await.unwrap();
    assert_eq!(model.read(|s| *s), 100);
    handle.stop().await.unwrap();
    server.stop().await;
}
