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
    GroupConfig, GroupFilter, MAX_DELIVERIES_MAX, MAX_IN_FLIGHT_MAX, MetadataField,
    PIN_FIELD_BYTES_MAX, PinBy, RetryBackoff, Start, Strategy, TIMEOUT_MS_MAX,
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
/// Bytes of event data and metadata one pull (or one step of a push stream) hands out at most;
/// the event that reaches it is the last (so at least one is handed out). A pull's answer is
/// built whole and held until the client has read it: without this bound, a pull of
/// `PULL_MAX` events of 1 MiB would hold gigabytes for one slow reader.
pub const PULL_DATA_BYTES_MAX: usize = 4 << 20;
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
/// With a shared state store, how often an open group's configuration is read again (a change
/// or deletion through another server applies here within this).
pub const CONFIG_REFRESH: Duration = Duration::from_secs(1);

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
    /// Other servers keep their groups in the same state store.
    shared: bool,
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
    /// The event, in the API's JSON shape at the time it was parked, as that JSON text (its
    /// data as stored: key order and numbers kept).
    pub event: Box<serde_json::value::RawValue>,
    /// Its position in the source's `$all`.
    pub position: u64,
    /// The last failure's reason.
    pub reason: String,
    /// Delivery attempts made.
    pub attempts: u32,
    /// When it was parked (RFC 3339).
    pub parked_at: String,
}

impl ParkedEvent {
    /// The event's JSON parsed, to look into (object keys sorted, big numbers rounded: for
    /// the text as stored, read `event`).
    pub fn event_value(&self) -> serde_json::Value {
        serde_json::from_str(self.event.get()).unwrap_or(serde_json::Value::Null)
    }
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
    /// This server is the only one using `state` (as the embedded engine's lock guarantees).
    /// Must run inside a tokio runtime.
    pub async fn open(
        source: Arc<dyn EventStore>,
        state: Arc<dyn EventStore>,
    ) -> GroupResult<Groups> {
        Groups::open_with(source, state, false).await
    }

    /// Opens the groups kept in `state` when several servers share it (each with the same
    /// `source`, e.g. one PostgreSQL database). Every server may serve every group: a take is
    /// recorded as a `claimed` record before it is handed out and every write to a group's acks
    /// stream goes right after the last record its server applied (a conflict means another
    /// server wrote first: its records are applied and the write is made again), so no server
    /// delivers an event whose settle was recorded before, and an event another server has out
    /// is not delivered until that delivery's ack timeout. A group created, changed or deleted
    /// through another server is seen here within [`CONFIG_REFRESH`]. Costs a read and a
    /// write of the state store per pull that hands something out.
    pub async fn open_shared(
        source: Arc<dyn EventStore>,
        state: Arc<dyn EventStore>,
    ) -> GroupResult<Groups> {
        Groups::open_with(source, state, true).await
    }

    async fn open_with(
        source: Arc<dyn EventStore>,
        state: Arc<dyn EventStore>,
        shared: bool,
    ) -> GroupResult<Groups> {
        let groups = Groups {
            inner: Arc::new(Inner {
                source,
                state,
                groups: RwLock::new(HashMap::new()),
                admin: tokio::sync::Mutex::new(()),
                observer: ObserverSlot::default(),
                shared,
            }),
        };
        groups.discover().await?;
        Ok(groups)
    }

    /// Opens every group of the state store not open here yet.
    async fn discover(&self) -> GroupResult<()> {
        let state = &*self.inner.state;
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
                if !self.inner.groups.read().contains_key(&name) {
                    self.load(&name).await?;
                }
            }
            match page.next {
                Some(n) => after = Some(n.as_str().to_owned()),
                None => return Ok(()),
            }
        }
    }

    /// Opens a group from its stored configuration (`None` when it has none), unless it is
    /// open already.
    async fn load(&self, name: &GroupName) -> GroupResult<Option<Arc<Group>>> {
        let Some(stored) = persist::load_config(&*self.inner.state, name).await? else {
            return Ok(None);
        };
        if let Some(g) = self.inner.groups.read().get(name) {
            return Ok(Some(g.clone()));
        }
        let g = self.open_group(name, stored).await?;
        let mut groups = self.inner.groups.write();
        match groups.get(name) {
            // Opened meanwhile by another request: keep that one.
            Some(other) => {
                let other = other.clone();
                drop(groups);
                g.stop();
                Ok(Some(other))
            }
            None => {
                groups.insert(name.clone(), g.clone());
                Ok(Some(g))
            }
        }
    }

    async fn open_group(&self, name: &GroupName, stored: StoredConfig) -> GroupResult<Arc<Group>> {
        Group::open(
            name.clone(),
            self.inner.source.clone(),
            self.inner.state.clone(),
            stored,
            self.inner.observer.clone(),
            self.inner.shared,
        )
        .await
    }

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

    /// The group named so. With a shared state store, a group not open here is looked for in
    /// the store (another server may have created it), and an open one's configuration is read
    /// again once per [`CONFIG_REFRESH`] (another server may have changed or deleted it).
    async fn find(&self, name: &GroupName) -> GroupResult<Arc<Group>> {
        let local = self.inner.groups.read().get(name).cloned();
        if !self.inner.shared {
            return self.get(name);
        }
        if let Some(g) = local
            && !g.config_due(CONFIG_REFRESH)
        {
            return Ok(g);
        }
        let _admin = self.inner.admin.lock().await;
        // Refreshed by another request while this one waited for the lock.
        let local = self.inner.groups.read().get(name).cloned();
        if let Some(g) = local
            && !g.config_due(CONFIG_REFRESH)
        {
            return Ok(g);
        }
        self.refresh(name)
            .await?
            .ok_or_else(|| GroupError::NotFound {
                group: name.to_string(),
            })
    }

    /// Brings a group in line with its stored configuration (shared state store; the caller
    /// holds `admin`): opened when only the store has it, updated when changed, closed when
    /// deleted.
    async fn refresh(&self, name: &GroupName) -> GroupResult<Option<Arc<Group>>> {
        let local = self.inner.groups.read().get(name).cloned();
        let Some(g) = local else {
            return self.load(name).await;
        };
        match persist::load_config(&*self.inner.state, name).await? {
            Some(stored) => {
                let config: GroupConfig = stored.config.into();
                if g.config() != config {
                    g.update(config);
                }
                g.config_checked();
                Ok(Some(g))
            }
            None => {
                self.inner.groups.write().remove(name);
                for t in g.stop() {
                    let _ = t.await;
                }
                Ok(None)
            }
        }
    }

    /// Creates a group, or replaces an existing group's settings (its `start` applies only at
    /// creation). Durable when it returns. An update that keeps a group `pinned` cannot change
    /// its `pin_by` ([`GroupError::PinByChanged`]): the deliveries in flight were made in the
    /// order of the current key.
    pub async fn put(&self, name: &GroupName, config: GroupConfig) -> GroupResult<PutOutcome> {
        config.validate()?;
        let _admin = self.inner.admin.lock().await;
        let state = &*self.inner.state;
        let existing = if self.inner.shared {
            // Created through another server: an update, never a second creation.
            self.refresh(name).await?
        } else {
            self.inner.groups.read().get(name).cloned()
        };
        if let Some(g) = existing {
            let current = g.config();
            if current.strategy == Strategy::Pinned
                && config.strategy == Strategy::Pinned
                && current.pin_by != config.pin_by
            {
                return Err(GroupError::PinByChanged {
                    group: name.to_string(),
                    current: current.pin_by.to_string(),
                    asked: config.pin_by.to_string(),
                });
            }
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
        let g = self.open_group(name, stored).await?;
        self.inner.groups.write().insert(name.clone(), g);
        Ok(PutOutcome::Created)
    }

    /// Deletes a group with its acks and parked events. Durable when it returns.
    pub async fn delete(&self, name: &GroupName) -> GroupResult<()> {
        let _admin = self.inner.admin.lock().await;
        let g = if self.inner.shared {
            self.refresh(name)
                .await?
                .ok_or_else(|| GroupError::NotFound {
                    group: name.to_string(),
                })?
        } else {
            self.get(name)?
        };
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
        if self.inner.shared {
            self.discover().await?;
        }
        let mut out = Vec::new();
        for n in self.names() {
            if let Ok(g) = self.find(&n).await {
                out.push(g.info().await?);
            }
        }
        Ok(out)
    }

    /// One group's settings and figures.
    pub async fn info(&self, name: &GroupName) -> GroupResult<GroupInfo> {
        self.find(name).await?.info().await
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
        Ok(self.find(name).await?.pull(consumer, max, wait).await)
    }

    /// Opens a push stream for `consumer`: it is live until the returned handle is dropped.
    pub async fn push(&self, name: &GroupName, consumer: &ConsumerName) -> GroupResult<PushStream> {
        let group = self.find(name).await?;
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

    /// The events of the deliveries `ids` names that are still out (not yet acked, nacked or
    /// timed out), without settling them: for the span of an ack or nack, which links to the
    /// contexts those events store. Unknown ids are left out.
    pub async fn delivered_events(
        &self,
        name: &GroupName,
        ids: &[String],
    ) -> GroupResult<Vec<Arc<eventfold_core::RecordedEvent>>> {
        Self::check_ids(ids)?;
        Ok(self.find(name).await?.delivered_events(ids))
    }

    /// Acknowledges deliveries. When this returns `Ok`, the acked events are never delivered
    /// to this group again, even after a crash.
    pub async fn ack(&self, name: &GroupName, ids: &[String]) -> GroupResult<AckOutcome> {
        Self::check_ids(ids)?;
        self.find(name).await?.ack(ids).await
    }

    /// Nacks deliveries: retry after the backoff, park now, or skip (never deliver again). When
    /// a `retry` returns `Ok`, the failed attempt is recorded: the event gets `max_deliveries`
    /// attempts in all, across restarts. A park is made once, also when the process dies
    /// between its two appends (the next start-up completes it).
    pub async fn nack(
        &self,
        name: &GroupName,
        ids: &[String],
        action: NackAction,
        reason: &str,
    ) -> GroupResult<AckOutcome> {
        Self::check_ids(ids)?;
        self.find(name)
            .await?
            .nack(ids, action, reason_cut(reason))
            .await
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
        let (parked, next) = self.find(name).await?.parked(from, limit).await?;
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
        self.find(name).await?.replay(max).await
    }

    /// The state-store stream behind `$parked-{group}`, when the group exists.
    pub async fn parked_stream(&self, name: &GroupName) -> GroupResult<StreamName> {
        self.find(name).await.map(|_| name.parked_stream())
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
