//! Consumer groups over in-memory stores, and over real engines in a temporary directory where
//! a restart must read back what the groups wrote to disk.

mod basics;
mod durable;
mod lag;
mod observe;
mod pin_by;
mod powerloss;
mod servers;
mod share;
mod timing;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{EventStore, EventType, ExpectedRevision, NewEvent, StreamName};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_groups::{ConsumerName, Delivery, GroupConfig, GroupName, Groups};
use eventfold_memory::MemoryStore;

/// The source and state stores under a test's groups.
enum Stores {
    /// In memory: a restart keeps both stores and opens the groups over them again, which
    /// exercises the groups' own recovery from their state stream.
    Memory,
    /// Engines in `dir`: a restart shuts them down and opens them again from disk.
    Disk {
        dir: PathBuf,
        source: Engine,
        state: Engine,
    },
}

/// A source store, a state store and the groups over them.
#[allow(missing_debug_implementations)]
pub struct Env {
    pub source: Arc<dyn EventStore>,
    state: Arc<dyn EventStore>,
    stores: Stores,
    pub groups: Groups,
}

impl Env {
    /// Two fresh in-memory stores. They have no threads of their own, so paused tokio time
    /// moves only when every task (the groups' included) waits for a timer.
    pub async fn memory() -> Env {
        let source: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let state: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        Env::over(source, state, Stores::Memory).await
    }

    /// Two engines in `dir` (created if new, recovered if not).
    pub async fn on_disk(dir: &Path) -> Env {
        let options = EngineOptions::for_tests();
        let source = Engine::open(dir.join("source"), options.clone()).expect("open source");
        let state = Engine::open(dir.join("groups"), options).expect("open state");
        Env::over(
            Arc::new(source.clone()),
            Arc::new(state.clone()),
            Stores::Disk {
                dir: dir.to_path_buf(),
                source,
                state,
            },
        )
        .await
    }

    async fn over(source: Arc<dyn EventStore>, state: Arc<dyn EventStore>, stores: Stores) -> Env {
        let groups = Groups::open(source.clone(), state.clone())
            .await
            .expect("open groups");
        Env {
            source,
            state,
            stores,
            groups,
        }
    }

    /// Stops the groups and opens them again: over the same stores in memory, over engines
    /// reopened from disk otherwise.
    pub async fn restart(self) -> Env {
        match self.stores {
            Stores::Memory => {
                self.groups.shutdown().await;
                drop(self.groups);
                Env::over(self.source, self.state, Stores::Memory).await
            }
            Stores::Disk { ref dir, .. } => {
                let dir = dir.clone();
                self.close().await;
                Env::on_disk(&dir).await
            }
        }
    }

    /// Stops the groups and shuts the engines down, as a crash would (minus the page cache).
    pub async fn close(self) {
        self.groups.shutdown().await;
        drop(self.groups);
        if let Stores::Disk { source, state, .. } = self.stores {
            source.shutdown();
            state.shutdown();
        }
    }

    /// Appends `n` events of `ty` to `stream` in batches; returns their positions.
    pub async fn append(&self, stream: &str, ty: &str, n: usize) -> Vec<u64> {
        let stream = StreamName::new(stream).unwrap();
        let mut out = Vec::new();
        let mut left = n;
        while left > 0 {
            let k = left.min(1000);
            let batch = (0..k)
                .map(|i| NewEvent::json(EventType::new(ty).unwrap(), &serde_json::json!({"i": i})))
                .collect();
            let r = self
                .source
                .append(&stream, ExpectedRevision::Any, batch)
                .await
                .unwrap();
            out.extend(r.first_position.0..=r.last_position.0);
            left -= k;
        }
        out
    }

    pub async fn pull(
        &self,
        group: &GroupName,
        consumer: &str,
        max: usize,
        wait_ms: u64,
    ) -> Vec<Delivery> {
        self.groups
            .pull(
                group,
                &ConsumerName::new(consumer).unwrap(),
                max,
                Duration::from_millis(wait_ms),
            )
            .await
            .unwrap()
    }

    pub async fn ack(&self, group: &GroupName, ds: &[Delivery]) {
        let ids = ids(ds);
        let out = self.groups.ack(group, &ids).await.unwrap();
        assert_eq!(out.acked, ids, "every fresh delivery is acked");
    }
}

pub fn ids(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(|d| d.delivery_id.clone()).collect()
}

pub fn positions(ds: &[Delivery]) -> BTreeSet<u64> {
    ds.iter().map(|d| d.event.position.0).collect()
}

pub fn group(name: &str) -> GroupName {
    GroupName::new(name).unwrap()
}

/// A config from the start of the log with the given tweaks.
pub fn config(tweak: impl FnOnce(&mut GroupConfig)) -> GroupConfig {
    let mut c = GroupConfig {
        start: eventfold_groups::Start::Start,
        ..GroupConfig::default()
    };
    tweak(&mut c);
    c
}

/// A retry backoff.
pub fn backoff(initial_ms: u64, multiplier: f64, max_ms: u64) -> eventfold_groups::RetryBackoff {
    eventfold_groups::RetryBackoff {
        initial_ms,
        max_ms,
        multiplier,
    }
}

/// Lets the group's reader catch up until `n` events are unsettled (no time passes).
pub async fn loaded(env: &Env, g: &GroupName, n: usize) {
    for _ in 0..100_000 {
        if env.groups.info(g).await.unwrap().unsettled >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the group never read {n} events");
}
