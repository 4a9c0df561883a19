//! Consumer groups (persistent subscriptions): server-side competing consumers with
//! at-least-once delivery, retries with exponential backoff, parking and replay.
//!
//! Written against [`eventfold_core::EventStore`] only. A [`Groups`] manager reads a *source*
//! store (the user's events) and keeps every group's durable state (configuration, ack
//! decisions, checkpoints, parked events) in a separate *state* store, so the source's `$all`
//! stays clean and the state gets the store's durability. See ARCHITECTURE.md, "Consumer
//! groups", for the layout and the delivery rules.

mod config;
mod error;
mod group;
mod name;
mod observe;
mod persist;
mod records;
mod window;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{EventStore, ListStreams, ReadAll, StreamName};
use parking_lot::RwLock;

pub use config::{
    GroupConfig, GroupFilter, MAX_DELIVERIES_MAX, MAX_IN_FLIGHT_MAX, RetryBackoff, Start, Strategy,
    TIMEOUT_MS_MAX,
};
pub use error::{GroupError, GroupResult};
pub use group::{CHECKPOINT_EVERY_RECORDS, ConsumerInfo, GroupInfo, LAG_COUNT_MAX, NackAction};
pub use name::{ConsumerName, GROUP_NAME_BYTES_MAX, GroupName};
pub use observe::{DeliveryEnded, DeliveryObserver, DeliveryOutcome};
pub use window::{AckOutcome, Delivery, READ_AHEAD_EVENTS};

use group::Group;
use observe::ObserverSlot;
use records::StoredConfig;

/// Most deliveries one pull may ask for.
pub const PULL_MAX: usize = 10_000;
/// Longest long-poll wait: one minute (longer polls are better served by a push stream).
pub const PULL_WAIT_MS_MAX: u64 = 60_000;
/// Most ids in one ack or nack: one ack record stays well below the per-event size limit.
pub const ACK_IDS_MAX: usize = 10_000;
/// Most parked events listed or replayed by one request.
pub const PARKED_LIMIT_MAX: usize = 10_000;
/// Longest nack reason kept, in bytes.
pub const REASON_BYTES_MAX: usize = 1024;
/// Names listed per page while finding the groups at start-up.
const LIST_PAGE: usize = 100;

/// The consumer groups of one source store.
#[derive(Clone)]
pub struct Groups {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn EventStore>,
    state: Arc<dyn EventStore>,
    groups: RwLock<HashMap<GroupName, Arc<Group>>>,
    /// Creations and deletions one at a time.
    admin: tokio::sync::Mutex<()>,
    /// Shared with every group.
    observer: ObserverSlot,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("groups", &self.inner.groups.read().len())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for g in self.groups.get_mut().values() {
            g.stop();
        }
    }
}

/// A parked event as listed.
#[derive(Clone, Debug)]
pub struct ParkedEvent {
    /// The event, in the API's JSON shape at the time it was parked.
    pub event: serde_json::Value,
    /// Its position in the source's `$all`.
    pub position: u64,
    /// The last failure's reason.
    pub reason: String,
    /// Delivery attempts made.
    pub attempts: u32,
    /// When it was parked (RFC 3339).
    pub parked_at: String,
}

/// A page of parked events.
#[derive(Clone, Debug)]
pub struct ParkedPage {
    /// The parked events, oldest first.
    pub parked: Vec<ParkedEvent>,
    /// Where to continue (`from`), `None` at the end.
    pub next: Option<u64>,
}

/// Whether `put` created the group or updated it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// A new group.
    Created,
    /// An existing group's settings were replaced.
    Updated,
}

fn reason_cut(reason: &str) -> &str {
    if reason.len() <= REASON_BYTES_MAX {
        return reason;
    }
    let mut end = REASON_BYTES_MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

impl Groups {
    /// Opens the groups kept in `state`, reading events from `source`, and starts delivering.
    /// Must run inside a tokio runtime.
    pub async fn open(
        source: Arc<dyn EventStore>,
        state: Arc<dyn EventStore>,
    ) -> GroupResult<Groups> {
        let observer = ObserverSlot::default();
        let mut found = HashMap::new();
        let mut after = None;
        loop {
            let page = state
                .list_streams(ListStreams {
                    prefix: Some("group-".into()),
                    after,
                    limit: LIST_PAGE,
                })
                .await
                .map_err(|cause| GroupError::Store {
                    group: "*".into(),
                    context: "list the groups",
                    cause,
                })?;
            for s in &page.streams {
                let Some(name) = s
                    .as_str()
                    .strip_prefix("group-")
                    .and_then(|n| n.strip_suffix("-config"))
                else {
                    continue;
                };
                let Ok(name) = GroupName::new(name) else {
                    continue;
                };
                if let Some(stored) = persist::load_config(&*state, &name).await? {
                    let g = Group::open(
                        name.clone(),
                        source.clone(),
                        state.clone(),
                        stored,
                        observer.clone(),
                    )
                    .await?;
                    found.insert(name, g);
                }
            }
            match page.next {
                Some(n) => after = Some(n.as_str().to_owned()),
                None => break,
            }
        }
        Ok(Groups {
            inner: Arc::new(Inner {
                source,
                state,
                groups: RwLock::new(found),
                admin: tokio::sync::Mutex::new(()),
                observer,
            }),
        })
    }

    /// Calls `observer` for every delivery of every group that ends from now on (acked,
    /// nacked, timed out), with how long its consumer held it; replaces an observer set before.
    pub fn observe_deliveries(&self, observer: DeliveryObserver) {
        self.inner.observer.set(Some(observer));
    }

    fn get(&self, name: &GroupName) -> GroupResult<Arc<Group>> {
        self.inner
            .groups
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| GroupError::NotFound {
                group: name.to_string(),
            })
    }

    /// Creates a group, or replaces an existing group's settings (its `start` applies only at
    /// creation). Durable when it returns.
    pub async fn put(&self, name: &GroupName, config: GroupConfig) -> GroupResult<PutOutcome> {
        config.validate()?;
        let _admin = self.inner.admin.lock().await;
        let state = &*self.inner.state;
        let existing = self.inner.groups.read().get(name).cloned();
        if let Some(g) = existing {
            let start_position = g.info().await?.start_position;
            let stored = StoredConfig::new(&config, start_position);
            persist::write_config(state, name, &stored).await?;
            g.update(config);
            return Ok(PutOutcome::Updated);
        }
        // Leftovers of a deletion interrupted by a crash must not leak into the new group.
        persist::remove(state, name, &name.acks_stream()).await?;
        persist::remove(state, name, &name.parked_stream()).await?;
        let start_position = match config.start {
            Start::Start => 0,
            Start::Position(p) => p,
            Start::End => self
                .inner
                .source
                .read_all(ReadAll::backward(1))
                .await
                .map_err(persist::store_err(name, "read the end of the source"))?
                .events
                .first()
                .map_or(0, |e| e.position.0 + 1),
        };
        let stored = StoredConfig::new(&config, start_position);
        persist::write_config(state, name, &stored).await?;
        let g = Group::open(
            name.clone(),
            self.inner.source.clone(),
            self.inner.state.clone(),
            stored,
            self.inner.observer.clone(),
        )
        .await?;
        self.inner.groups.write().insert(name.clone(), g);
        Ok(PutOutcome::Created)
    }

    /// Deletes a group with its acks and parked events. Durable when it returns.
    pub async fn delete(&self, name: &GroupName) -> GroupResult<()> {
        let _admin = self.inner.admin.lock().await;
        let g = self.get(name)?;
        let state = &*self.inner.state;
        // The configuration goes first: once it is gone the group is gone, also after a crash.
        persist::remove(state, name, &name.config_stream()).await?;
        self.inner.groups.write().remove(name);
        for t in g.stop() {
            let _ = t.await;
        }
        persist::remove(state, name, &name.acks_stream()).await?;
        persist::remove(state, name, &name.parked_stream()).await?;
        Ok(())
    }

    /// The names of every group, sorted.
    pub fn names(&self) -> Vec<GroupName> {
        let mut v: Vec<GroupName> = self.inner.groups.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// Every group's info, sorted by name.
    pub async fn list(&self) -> GroupResult<Vec<GroupInfo>> {
        let mut out = Vec::new();
        for n in self.names() {
            if let Ok(g) = self.get(&n) {
                out.push(g.info().await?);
            }
        }
        Ok(out)
    }

    /// One group's settings and figures.
    pub async fn info(&self, name: &GroupName) -> GroupResult<GroupInfo> {
        self.get(name)?.info().await
    }

    /// Long-poll: up to `max` deliveries for `consumer`, answering as soon as there is at
    /// least one, or empty after `wait`.
    pub async fn pull(
        &self,
        name: &GroupName,
        consumer: &ConsumerName,
        max: usize,
        wait: Duration,
    ) -> GroupResult<Vec<Delivery>> {
        if !(1..=PULL_MAX).contains(&max) {
            return Err(GroupError::invalid(
                "max",
                format!("{max} is not in 1..={PULL_MAX}"),
            ));
        }
        if wait > Duration::from_millis(PULL_WAIT_MS_MAX) {
            return Err(GroupError::invalid(
                "wait_ms",
                format!("{} is above {PULL_WAIT_MS_MAX}", wait.as_millis()),
            ));
        }
        Ok(self.get(name)?.pull(consumer, max, wait).await)
    }

    /// Opens a push stream for `consumer`: it is live until the returned handle is dropped.
    pub fn push(&self, name: &GroupName, consumer: &ConsumerName) -> GroupResult<PushStream> {
        let group = self.get(name)?;
        group.push_opened(consumer);
        Ok(PushStream {
            group,
            consumer: consumer.clone(),
        })
    }

    fn check_ids(ids: &[String]) -> GroupResult<()> {
        if ids.is_empty() || ids.len() > ACK_IDS_MAX {
            return Err(GroupError::invalid(
                "delivery_ids",
                format!("give 1..={ACK_IDS_MAX} delivery ids (got {})", ids.len()),
            ));
        }
        Ok(())
    }

    /// Acknowledges deliveries. When this returns `Ok`, the acked events are never delivered
    /// to this group again, even after a crash.
    pub async fn ack(&self, name: &GroupName, ids: &[String]) -> GroupResult<AckOutcome> {
        Self::check_ids(ids)?;
        self.get(name)?.ack(ids).await
    }

    /// Nacks deliveries: retry after the backoff, park now, or skip (never deliver again).
    pub async fn nack(
        &self,
        name: &GroupName,
        ids: &[String],
        action: NackAction,
        reason: &str,
    ) -> GroupResult<AckOutcome> {
        Self::check_ids(ids)?;
        self.get(name)?.nack(ids, action, reason_cut(reason)).await
    }

    /// Parked events not yet replayed, from `from` (a revision of the parked stream).
    pub async fn parked(
        &self,
        name: &GroupName,
        from: Option<u64>,
        limit: usize,
    ) -> GroupResult<ParkedPage> {
        if !(1..=PARKED_LIMIT_MAX).contains(&limit) {
            return Err(GroupError::invalid(
                "limit",
                format!("{limit} is not in 1..={PARKED_LIMIT_MAX}"),
            ));
        }
        let (parked, next) = self.get(name)?.parked(from, limit).await?;
        Ok(ParkedPage { parked, next })
    }

    /// Delivers up to `max` parked events again, oldest first (at most
    /// [`PARKED_LIMIT_MAX`] per call); returns how many.
    pub async fn replay(&self, name: &GroupName, max: Option<usize>) -> GroupResult<usize> {
        let max = max.unwrap_or(PARKED_LIMIT_MAX);
        if !(1..=PARKED_LIMIT_MAX).contains(&max) {
            return Err(GroupError::invalid(
                "max",
                format!("{max} is not in 1..={PARKED_LIMIT_MAX}"),
            ));
        }
        self.get(name)?.replay(max).await
    }

    /// The state-store stream behind `$parked-{group}`, when the group exists.
    pub fn parked_stream(&self, name: &GroupName) -> GroupResult<StreamName> {
        self.get(name).map(|_| name.parked_stream())
    }

    /// The state store (to read `$parked-{group}` from).
    pub fn state_store(&self) -> &Arc<dyn EventStore> {
        &self.inner.state
    }

    /// Stops every group's background work and waits until it is gone (so that the stores can
    /// be shut down). Later calls on this manager may fail.
    pub async fn shutdown(&self) {
        let groups: Vec<Arc<Group>> = self.inner.groups.read().values().cloned().collect();
        for g in groups {
            for t in g.stop() {
                let _ = t.await;
            }
        }
    }
}

/// An open push stream of one consumer: it counts as live while this exists.
pub struct PushStream {
    group: Arc<Group>,
    consumer: ConsumerName,
}

impl std::fmt::Debug for PushStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushStream")
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl PushStream {
    /// The next deliveries (up to `max`), or empty after `wait` (time for a heartbeat).
    pub async fn next(&self, max: usize, wait: Duration) -> Vec<Delivery> {
        self.group
            .pull(&self.consumer, max.clamp(1, PULL_MAX), wait)
            .await
    }
}

impl Drop for PushStream {
    fn drop(&mut self) {
        self.group.push_closed(&self.consumer);
    }
}
