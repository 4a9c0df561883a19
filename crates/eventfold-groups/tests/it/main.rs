//! Consumer groups against real engines in temporary directories.

mod basics;
mod held;
mod lag;
mod observe;
mod share;
mod timing;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{EventStore, EventType, ExpectedRevision, NewEvent, StreamName};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_groups::{ConsumerName, Delivery, GroupConfig, GroupName, Groups};

/// A source engine, a state engine and the groups over them, in `dir`.
#[allow(missing_debug_implementations)]
pub struct Env {
    pub source: Engine,
    pub state: Engine,
    pub groups: Groups,
}

impl Env {
    pub async fn open(dir: &Path) -> Env {
        Env::open_with(dir, EngineOptions::for_tests()).await
    }

    pub async fn open_with(dir: &Path, options: EngineOptions) -> Env {
        let source = Engine::open(dir.join("source"), options.clone()).expect("open source");
        let state = Engine::open(dir.join("groups"), options).expect("open state");
        let groups = Groups::open(
            Arc::new(held::Held(Arc::new(source.clone()))) as Arc<dyn EventStore>,
            Arc::new(held::Held(Arc::new(state.clone()))) as Arc<dyn EventStore>,
        )
        .await
        .expect("open groups");
        Env {
            source,
            state,
            groups,
        }
    }

    /// Drops everything and shuts the engines down, as a crash would (minus the page cache).
    pub async fn close(self) {
        self.groups.shutdown().await;
        drop(self.groups);
        self.source.shutdown();
        self.state.shutdown();
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
            let r = held::Held(Arc::new(self.source.clone()))
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

/// A config from the start of the log with the given tweaks as JSON.
pub fn config(tweaks: serde_json::Value) -> GroupConfig {
    let mut v = serde_json::json!({"start": "start"});
    if let (Some(o), Some(t)) = (v.as_object_mut(), tweaks.as_object()) {
        for (k, x) in t {
            o.insert(k.clone(), x.clone());
        }
    }
    serde_json::from_value(v).unwrap()
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
