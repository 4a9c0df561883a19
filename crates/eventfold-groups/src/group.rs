//! One consumer group: its in-memory delivery state, its reader and timer tasks, and the
//! operations on it. Durable state goes through `records`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eventfold_core::{
    EventStore, Position, ReadAll, ReadFrom, RecordedEvent, StreamName, SubscribeFrom, Timestamp,
};
use futures::StreamExt as _;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{GroupConfig, Strategy};
use crate::error::{GroupError, GroupResult};
use crate::name::{ConsumerName, GroupName};
use crate::records::{
    self, Checkpoint, ParkedEvent, ReplayCursor, Replayed, Restored, SettleAction, Settled,
};

/// Events read ahead of delivery, beyond `max_in_flight`: keeps consumers fed without holding
/// more than a page or two of the source in memory.
pub const READ_AHEAD_EVENTS: usize = 512;
/// Ack records between two checkpoints: a restart reads at most this many records.
pub const CHECKPOINT_EVERY_RECORDS: u64 = 256;
/// Most pinned stream assignments kept; beyond it assignments of streams with nothing
/// unsettled are forgotten (those streams may then go to another live consumer).
pub const PINNED_STREAMS_MAX: usize = 100_000;
/// Most consumers remembered per group (those neither live nor holding deliveries are dropped).
pub const CONSUMERS_MAX: usize = 10_000;
/// Most unread events counted for a group's lag (one bounded read of the source).
pub const LAG_COUNT_MAX: usize = 1000;
/// Wait before reading the source again after it failed.
const SOURCE_RETRY: Duration = Duration::from_secs(1);

/// One delivery of an event to a consumer.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Opaque id to ack or nack with; unknown once the delivery timed out or was settled.
    pub delivery_id: String,
    /// 1 for the first delivery of this event, 2 for the first retry, ...
    pub attempt: u32,
    /// The event.
    pub event: Arc<RecordedEvent>,
}

impl Serialize for Delivery {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("delivery_id", &self.delivery_id)?;
        m.serialize_entry("attempt", &self.attempt)?;
        m.serialize_entry("event", &*self.event)?;
        m.end()
    }
}

/// What an ack or nack did with each id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AckOutcome {
    /// Ids settled (ack) or acted on (nack).
    pub acked: Vec<String>,
    /// Ids unknown, already settled or timed out: their events were or will be delivered again.
    pub unknown: Vec<String>,
}

/// What a nack asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NackAction {
    /// Deliver again after the backoff (parked once `max_deliveries` attempts were made).
    Retry,
    /// Park it now.
    Park,
    /// Never deliver it again, like an ack.
    Skip,
}

/// A consumer as shown in a group's info.
#[derive(Clone, Debug, Serialize)]
pub struct ConsumerInfo {
    /// Its name.
    pub name: String,
    /// Whether it has an open push stream or pulled within the ack timeout.
    pub live: bool,
    /// Its unacknowledged deliveries.
    pub in_flight: usize,
    /// Open push streams.
    pub push_streams: usize,
}

/// A group's configuration and delivery figures.
#[derive(Clone, Debug, Serialize)]
pub struct GroupInfo {
    /// The group's name.
    pub group: String,
    /// Its settings.
    #[serde(flatten)]
    pub config: GroupConfig,
    /// The position the group started from.
    pub start_position: u64,
    /// Every position below this is settled (acked, skipped or parked).
    pub checkpoint: u64,
    /// Matching events not yet settled: read and unsettled, plus not yet read (those counted up
    /// to [`LAG_COUNT_MAX`]; beyond it the figure is a lower bound).
    pub lag: u64,
    /// Deliveries not yet acknowledged.
    pub in_flight: usize,
    /// Events read and not yet settled (in flight, waiting for a retry, or ready).
    pub unsettled: usize,
    /// Parked events not yet replayed.
    pub parked: u64,
    /// Deliveries made since the server started.
    pub delivered_total: u64,
    /// Events acknowledged since the server started.
    pub acked_total: u64,
    /// Failed attempts (nack retry or ack timeout) since the server started.
    pub retried_total: u64,
    /// Events parked since the server started.
    pub parked_total: u64,
    /// The consumers seen recently.
    pub consumers: Vec<ConsumerInfo>,
}

#[derive(Debug)]
enum EntryState {
    Ready,
    Delivered {
        consumer: ConsumerName,
        deadline: Instant,
    },
    Backoff {
        until: Instant,
    },
    /// A settle (ack, skip, park) is being made durable.
    Settling,
}

#[derive(Debug)]
struct Entry {
    event: Arc<RecordedEvent>,
    attempts: u32,
    last_reason: String,
    state: EntryState,
}

#[derive(Debug)]
struct Consumer {
    last_pull: Option<Instant>,
    push_streams: usize,
    in_flight: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    delivered: u64,
    acked: u64,
    retried: u64,
    parked: u64,
}

#[derive(Debug)]
struct State {
    config: GroupConfig,
    start_position: u64,
    /// Where the sequential read of the source continues.
    next_read: u64,
    /// Positions before `next_read` to read one by one (after a restart or a replay).
    fetch: BTreeSet<u64>,
    /// Positions at or after `next_read` already settled (known from the acks after a restart).
    settled_after: BTreeSet<u64>,
    /// Every read, unsettled event.
    entries: BTreeMap<u64, Entry>,
    ready: BTreeSet<u64>,
    timers: BTreeSet<(Instant, u64)>,
    by_stream: HashMap<StreamName, BTreeSet<u64>>,
    owners: HashMap<StreamName, ConsumerName>,
    consumers: HashMap<ConsumerName, Consumer>,
    in_flight: usize,
    parked: u64,
    parked_cursor: u64,
    counters: Counters,
}

impl State {
    fn window_full(&self) -> bool {
        self.entries.len() >= self.config.max_in_flight + READ_AHEAD_EVENTS
    }

    fn checkpoint_position(&self) -> u64 {
        let first_entry = self.entries.keys().next().copied();
        let first_fetch = self.fetch.first().copied();
        [first_entry, first_fetch, Some(self.next_read)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.next_read)
    }

    fn live(&self, c: &Consumer, now: Instant) -> bool {
        c.push_streams > 0
            || c.last_pull
                .is_some_and(|t| now < t + self.config.ack_timeout())
    }

    fn insert(&mut self, e: RecordedEvent) {
        let pos = e.position.0;
        if self.entries.contains_key(&pos) {
            return;
        }
        self.by_stream
            .entry(e.stream.clone())
            .or_default()
            .insert(pos);
        self.entries.insert(
            pos,
            Entry {
                event: Arc::new(e),
                attempts: 0,
                last_reason: String::new(),
                state: EntryState::Ready,
            },
        );
        self.ready.insert(pos);
    }

    /// Moves an entry to a new state, keeping `ready`, `timers` and the in-flight counts right.
    fn set_state(&mut self, pos: u64, new: EntryState) {
        let Some(entry) = self.entries.get_mut(&pos) else {
            return;
        };
        match &entry.state {
            EntryState::Ready => {
                self.ready.remove(&pos);
            }
            EntryState::Delivered { consumer, deadline } => {
                self.timers.remove(&(*deadline, pos));
                self.in_flight -= 1;
                if let Some(c) = self.consumers.get_mut(consumer) {
                    c.in_flight = c.in_flight.saturating_sub(1);
                }
            }
            EntryState::Backoff { until } => {
                self.timers.remove(&(*until, pos));
            }
            EntryState::Settling => {}
        }
        match &new {
            EntryState::Ready => {
                self.ready.insert(pos);
            }
            EntryState::Delivered { consumer, deadline } => {
                self.timers.insert((*deadline, pos));
                self.in_flight += 1;
                if let Some(c) = self.consumers.get_mut(consumer) {
                    c.in_flight += 1;
                }
            }
            EntryState::Backoff { until } => {
                self.timers.insert((*until, pos));
            }
            EntryState::Settling => {}
        }
        entry.state = new;
    }

    fn remove(&mut self, pos: u64) {
        self.set_state(pos, EntryState::Settling);
        if let Some(entry) = self.entries.remove(&pos) {
            let stream = &entry.event.stream;
            if let Some(set) = self.by_stream.get_mut(stream) {
                set.remove(&pos);
                if set.is_empty() {
                    self.by_stream.remove(stream);
                }
            }
        }
    }

    /// A failed attempt: back off, or park when the attempts are used up (returns `true`).
    fn fail(&mut self, pos: u64, reason: String, now: Instant) -> bool {
        let Some(entry) = self.entries.get_mut(&pos) else {
            return false;
        };
        entry.last_reason = reason;
        let attempts = entry.attempts;
        self.counters.retried += 1;
        if attempts >= self.config.max_deliveries {
            self.set_state(pos, EntryState::Settling);
            return true;
        }
        let delay = self.config.retry_backoff.delay(attempts);
        if delay.is_zero() {
            self.set_state(pos, EntryState::Ready);
        } else {
            self.set_state(pos, EntryState::Backoff { until: now + delay });
        }
        false
    }

    /// Whether `pos` (of `stream`) may go to `consumer` now under the pinned strategy.
    fn pinned_allows(
        &mut self,
        pos: u64,
        stream: &StreamName,
        consumer: &ConsumerName,
        now: Instant,
    ) -> bool {
        // An earlier event of the stream waiting for a (re)delivery holds this one back.
        if let Some(set) = self.by_stream.get(stream) {
            for p in set.range(..pos) {
                if matches!(
                    self.entries.get(p).map(|e| &e.state),
                    Some(EntryState::Ready | EntryState::Backoff { .. })
                ) {
                    return false;
                }
            }
        }
        match self.owners.get(stream) {
            Some(owner) if owner == consumer => true,
            Some(owner) if self.consumers.get(owner).is_some_and(|c| self.live(c, now)) => false,
            _ => {
                if self.owners.len() >= PINNED_STREAMS_MAX {
                    let by_stream = &self.by_stream;
                    self.owners.retain(|s, _| by_stream.contains_key(s));
                }
                self.owners.insert(stream.clone(), consumer.clone());
                true
            }
        }
    }

    fn take_ready(
        &mut self,
        consumer: &ConsumerName,
        max: usize,
        epoch: &str,
        now: Instant,
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        let mut cursor = 0u64;
        let mine_max = self.config.consumer_in_flight_max();
        let mut mine = self.consumers.get(consumer).map_or(0, |c| c.in_flight);
        while out.len() < max && self.in_flight < self.config.max_in_flight && mine < mine_max {
            let Some(&pos) = self.ready.range(cursor..).next() else {
                break;
            };
            cursor = pos + 1;
            let stream = self.entries[&pos].event.stream.clone();
            if self.config.strategy == Strategy::Pinned
                && !self.pinned_allows(pos, &stream, consumer, now)
            {
                continue;
            }
            let deadline = now + self.config.ack_timeout();
            self.set_state(
                pos,
                EntryState::Delivered {
                    consumer: consumer.clone(),
                    deadline,
                },
            );
            mine += 1;
            let entry = self.entries.get_mut(&pos).expect("entry just updated");
            entry.attempts += 1;
            self.counters.delivered += 1;
            out.push(Delivery {
                delivery_id: format!("{epoch}-{pos}-{}", entry.attempts),
                attempt: entry.attempts,
                event: entry.event.clone(),
            });
        }
        out
    }

    fn touch(&mut self, consumer: &ConsumerName, now: Instant, pull: bool) -> &mut Consumer {
        if !self.consumers.contains_key(consumer) && self.consumers.len() >= CONSUMERS_MAX {
            let ack_timeout = self.config.ack_timeout();
            self.consumers.retain(|_, c| {
                c.in_flight > 0
                    || c.push_streams > 0
                    || c.last_pull.is_some_and(|t| now < t + ack_timeout)
            });
        }
        let c = self.consumers.entry(consumer.clone()).or_insert(Consumer {
            last_pull: None,
            push_streams: 0,
            in_flight: 0,
        });
        if pull {
            c.last_pull = Some(now);
        }
        c
    }
}

/// One consumer group.
pub(crate) struct Group {
    pub name: GroupName,
    source: Arc<dyn EventStore>,
    state_store: Arc<dyn EventStore>,
    epoch: String,
    state: Mutex<State>,
    wake_consumers: Notify,
    wake_reader: Notify,
    wake_timer: Notify,
    /// Appends to the acks stream hold it shared; a checkpoint holds it exclusively so that it
    /// reflects every record before it and none after.
    ack_gate: tokio::sync::RwLock<()>,
    /// Replays one at a time.
    replay_lock: tokio::sync::Mutex<()>,
    records_since_checkpoint: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn parse_id(id: &str) -> Option<(&str, u64, u32)> {
    let mut it = id.splitn(3, '-');
    let epoch = it.next()?;
    let pos = it.next()?.parse().ok()?;
    let attempt = it.next()?.parse().ok()?;
    Some((epoch, pos, attempt))
}

impl Group {
    /// Builds the group from its stored state and starts its tasks.
    pub async fn open(
        name: GroupName,
        source: Arc<dyn EventStore>,
        state_store: Arc<dyn EventStore>,
        stored: records::StoredConfig,
    ) -> GroupResult<Arc<Group>> {
        let Restored {
            next_read,
            fetch,
            settled_after,
        } = records::restore_acks(&*state_store, &name, stored.start_position).await?;
        let (parked_cursor, parked) = records::restore_parked(&*state_store, &name).await?;
        let epoch = format!("{:08x}", uuid::Uuid::new_v4().as_u128() as u32);
        let group = Arc::new(Group {
            name,
            source,
            state_store,
            epoch,
            state: Mutex::new(State {
                config: stored.config,
                start_position: stored.start_position,
                next_read,
                fetch,
                settled_after,
                entries: BTreeMap::new(),
                ready: BTreeSet::new(),
                timers: BTreeSet::new(),
                by_stream: HashMap::new(),
                owners: HashMap::new(),
                consumers: HashMap::new(),
                in_flight: 0,
                parked,
                parked_cursor,
                counters: Counters::default(),
            }),
            wake_consumers: Notify::new(),
            wake_reader: Notify::new(),
            wake_timer: Notify::new(),
            ack_gate: tokio::sync::RwLock::new(()),
            replay_lock: tokio::sync::Mutex::new(()),
            records_since_checkpoint: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        group.start_tasks();
        Ok(group)
    }

    fn start_tasks(self: &Arc<Self>) {
        let g = self.clone();
        let reader = tokio::spawn(async move { g.read_loop().await });
        let g = self.clone();
        let timer = tokio::spawn(async move { g.timer_loop().await });
        let mut tasks = self.tasks.lock();
        tasks.push(reader);
        tasks.push(timer);
    }

    /// Stops the group's tasks (they hold the group and the stores).
    pub fn stop(&self) -> Vec<JoinHandle<()>> {
        let tasks: Vec<JoinHandle<()>> = self.tasks.lock().drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        self.wake_consumers.notify_waiters();
        tasks
    }

    /// Replaces the settings (the start is kept: it applies at creation only). A changed filter
    /// restarts the read of the source from where it was.
    pub fn update(self: &Arc<Self>, config: GroupConfig) {
        let restart = {
            let mut s = self.state.lock();
            let restart = s.config.filter != config.filter;
            s.config = config;
            restart
        };
        if restart {
            let mut tasks = self.tasks.lock();
            if let Some(reader) = tasks.first_mut() {
                reader.abort();
                let g = self.clone();
                *reader = tokio::spawn(async move { g.read_loop().await });
            }
        }
        self.wake_consumers.notify_waiters();
        self.wake_reader.notify_one();
        self.wake_timer.notify_one();
    }

    /// Waits until the window has room.
    async fn wait_for_room(&self) {
        loop {
            let notified = self.wake_reader.notified();
            if !self.state.lock().window_full() {
                return;
            }
            notified.await;
        }
    }

    async fn read_loop(self: Arc<Self>) {
        loop {
            let (from, filter) = {
                let s = self.state.lock();
                (s.next_read, s.config.filter.clone())
            };
            // Positions to read one by one first (restart, replay).
            loop {
                self.wait_for_room().await;
                let Some(pos) = self.state.lock().fetch.pop_first() else {
                    break;
                };
                let read = ReadAll::forward(1)
                    .from(ReadFrom::At(Position(pos)))
                    .filter(filter.event_filter());
                match self.source.read_all(read).await {
                    Ok(slice) => {
                        if let Some(e) = slice.events.into_iter().next()
                            && e.position.0 == pos
                        {
                            self.state.lock().insert(e);
                            self.wake_consumers.notify_waiters();
                        }
                        // Otherwise the event can no longer be read: nothing to deliver.
                    }
                    Err(e) => {
                        tracing::warn!(group = %self.name, error = %e, "cannot read the source; retrying");
                        self.state.lock().fetch.insert(pos);
                        tokio::time::sleep(SOURCE_RETRY).await;
                    }
                }
            }
            let mut sub = self
                .source
                .subscribe_all(SubscribeFrom::At(Position(from)), filter.event_filter());
            loop {
                self.wait_for_room().await;
                // New positions to fetch (a replay) interrupt the sequential read.
                if !self.state.lock().fetch.is_empty() {
                    break;
                }
                let next = tokio::select! {
                    n = sub.next() => n,
                    () = self.wake_reader.notified() => continue,
                };
                match next {
                    Some(Ok(e)) => {
                        let mut s = self.state.lock();
                        let pos = e.position.0;
                        if pos < s.next_read {
                            continue;
                        }
                        s.next_read = pos + 1;
                        s.fetch.remove(&pos);
                        let settled = s.settled_after.remove(&pos);
                        if !s.settled_after.is_empty() {
                            s.settled_after = s.settled_after.split_off(&(pos + 1));
                        }
                        if settled || !filter.matches_stream(e.stream.as_str()) {
                            continue;
                        }
                        s.insert(e);
                        drop(s);
                        self.wake_consumers.notify_waiters();
                    }
                    Some(Err(e)) => {
                        tracing::warn!(group = %self.name, error = %e, "the source subscription failed; resubscribing");
                        tokio::time::sleep(SOURCE_RETRY).await;
                        break;
                    }
                    None => {
                        tokio::time::sleep(SOURCE_RETRY).await;
                        break;
                    }
                }
            }
        }
    }

    async fn timer_loop(self: Arc<Self>) {
        loop {
            let notified = self.wake_timer.notified();
            let now = Instant::now();
            let (to_park, next, woke) = {
                let mut s = self.state.lock();
                let mut to_park = Vec::new();
                let mut woke = false;
                while let Some(&(t, pos)) = s.timers.first() {
                    if t > now {
                        break;
                    }
                    s.timers.pop_first();
                    match s.entries.get(&pos).map(|e| &e.state) {
                        Some(EntryState::Delivered { deadline, .. }) if *deadline == t => {
                            let reason =
                                format!("not acknowledged within {} ms", s.config.ack_timeout_ms);
                            // Reinsert so that `set_state` finds and removes it consistently.
                            s.timers.insert((t, pos));
                            if s.fail(pos, reason, now) {
                                to_park.push(pos);
                            }
                            woke = true;
                        }
                        Some(EntryState::Backoff { until }) if *until == t => {
                            s.timers.insert((t, pos));
                            s.set_state(pos, EntryState::Ready);
                            woke = true;
                        }
                        _ => {}
                    }
                }
                (to_park, s.timers.first().map(|(t, _)| *t), woke)
            };
            if woke {
                self.wake_consumers.notify_waiters();
            }
            if !to_park.is_empty()
                && let Err(e) = self.settle_positions(to_park, SettleAction::Park).await
            {
                tracing::error!(group = %self.name, error = %e, "cannot park events; they will be delivered again");
            }
            match next {
                Some(t) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(t) => {}
                        () = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Long-poll: up to `max` deliveries for `consumer`, waiting up to `wait` for the first.
    pub async fn pull(&self, consumer: &ConsumerName, max: usize, wait: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.wake_consumers.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let got = {
                let mut s = self.state.lock();
                s.touch(consumer, now, true);
                s.take_ready(consumer, max, &self.epoch, now)
            };
            if !got.is_empty() {
                self.wake_timer.notify_one();
                return got;
            }
            if now >= deadline {
                return got;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Counts an open push stream of `consumer` (live while counted).
    pub fn push_opened(&self, consumer: &ConsumerName) {
        let now = Instant::now();
        self.state.lock().touch(consumer, now, false).push_streams += 1;
    }

    /// Ends a push stream of `consumer`.
    pub fn push_closed(&self, consumer: &ConsumerName) {
        let now = Instant::now();
        let mut s = self.state.lock();
        let c = s.touch(consumer, now, true);
        c.push_streams = c.push_streams.saturating_sub(1);
    }

    /// Finds the deliveries the ids name and marks them settling; returns their positions.
    fn claim(&self, ids: &[String], out: &mut AckOutcome) -> Vec<u64> {
        let mut s = self.state.lock();
        let mut taken = Vec::new();
        for id in ids {
            let ok = parse_id(id).and_then(|(epoch, pos, attempt)| {
                let e = s.entries.get(&pos)?;
                (epoch == self.epoch
                    && e.attempts == attempt
                    && matches!(e.state, EntryState::Delivered { .. }))
                .then_some(pos)
            });
            match ok {
                Some(pos) => {
                    s.set_state(pos, EntryState::Settling);
                    taken.push(pos);
                    out.acked.push(id.clone());
                }
                None => out.unknown.push(id.clone()),
            }
        }
        taken
    }

    /// Acknowledges deliveries: durable before this returns.
    pub async fn ack(&self, ids: &[String]) -> GroupResult<AckOutcome> {
        let mut out = AckOutcome::default();
        let taken = self.claim(ids, &mut out);
        self.settle_positions(taken, SettleAction::Ack).await?;
        Ok(out)
    }

    /// Nacks deliveries.
    pub async fn nack(
        &self,
        ids: &[String],
        action: NackAction,
        reason: &str,
    ) -> GroupResult<AckOutcome> {
        let mut out = AckOutcome::default();
        let taken = self.claim(ids, &mut out);
        match action {
            NackAction::Skip => self.settle_positions(taken, SettleAction::Skip).await?,
            NackAction::Park => {
                {
                    let mut s = self.state.lock();
                    for &p in &taken {
                        if let Some(e) = s.entries.get_mut(&p) {
                            e.last_reason = reason.to_owned();
                        }
                    }
                }
                self.settle_positions(taken, SettleAction::Park).await?;
            }
            NackAction::Retry => {
                let now = Instant::now();
                let to_park: Vec<u64> = {
                    let mut s = self.state.lock();
                    taken
                        .into_iter()
                        .filter(|&p| {
                            // `claim` made it settling; a failed attempt starts from delivered.
                            s.fail(p, reason.to_owned(), now)
                        })
                        .collect()
                };
                self.wake_timer.notify_one();
                self.wake_consumers.notify_waiters();
                self.settle_positions(to_park, SettleAction::Park).await?;
            }
        }
        Ok(out)
    }

    /// Makes settling positions durable (parking them first when asked) and forgets them; on
    /// failure they become ready again and will be delivered again.
    async fn settle_positions(&self, positions: Vec<u64>, action: SettleAction) -> GroupResult<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let gate = self.ack_gate.read().await;
        let result = self.write_settled(&positions, action).await;
        {
            let mut s = self.state.lock();
            for &p in &positions {
                if result.is_ok() {
                    s.remove(p);
                } else if s.entries.contains_key(&p) {
                    s.set_state(p, EntryState::Ready);
                }
            }
            if result.is_ok() {
                let n = positions.len() as u64;
                match action {
                    SettleAction::Ack => s.counters.acked += n,
                    SettleAction::Skip => {}
                    SettleAction::Park => {
                        s.counters.parked += n;
                        s.parked += n;
                    }
                }
            }
        }
        drop(gate);
        self.wake_reader.notify_one();
        self.wake_consumers.notify_waiters();
        result?;
        self.records_since_checkpoint
            .fetch_add(1, Ordering::Relaxed);
        self.maybe_checkpoint().await
    }

    async fn write_settled(&self, positions: &[u64], action: SettleAction) -> GroupResult<()> {
        if action == SettleAction::Park {
            let parked: Vec<ParkedEvent> = {
                let s = self.state.lock();
                let at = Timestamp::now().to_string();
                positions
                    .iter()
                    .filter_map(|p| s.entries.get(p))
                    .map(|e| ParkedEvent {
                        event: serde_json::to_value(&*e.event).expect("events always serialize"),
                        position: e.event.position.0,
                        reason: e.last_reason.clone(),
                        attempts: e.attempts,
                        parked_at: at.clone(),
                    })
                    .collect()
            };
            let stream = self.name.parked_stream();
            for mut p in parked {
                let first = records::event(records::PARKED, &p);
                let r = records::append(
                    &*self.state_store,
                    &self.name,
                    &stream,
                    vec![first],
                    "park an event",
                )
                .await;
                if let Err(GroupError::Store {
                    cause: eventfold_core::StoreError::LimitExceeded { .. },
                    ..
                }) = r
                {
                    // Too big to copy: keep the event's coordinates without its data.
                    if let Some(obj) = p.event.as_object_mut() {
                        obj.remove("data");
                        obj.remove("data_base64");
                        obj.remove("metadata");
                    }
                    let ev = records::event(records::PARKED, &p);
                    records::append(
                        &*self.state_store,
                        &self.name,
                        &stream,
                        vec![ev],
                        "park an event",
                    )
                    .await?;
                } else {
                    r?;
                }
            }
        }
        let rec = records::event(
            records::SETTLED,
            &Settled {
                action,
                positions: positions.to_vec(),
            },
        );
        records::append(
            &*self.state_store,
            &self.name,
            &self.name.acks_stream(),
            vec![rec],
            "record acknowledgements",
        )
        .await
    }

    async fn maybe_checkpoint(&self) -> GroupResult<()> {
        if self.records_since_checkpoint.load(Ordering::Relaxed) < CHECKPOINT_EVERY_RECORDS {
            return Ok(());
        }
        let _gate = self.ack_gate.write().await;
        if self.records_since_checkpoint.load(Ordering::Relaxed) < CHECKPOINT_EVERY_RECORDS {
            return Ok(());
        }
        self.write_checkpoint().await
    }

    /// Appends a checkpoint; the caller holds the ack gate exclusively.
    async fn write_checkpoint(&self) -> GroupResult<()> {
        let c = {
            let s = self.state.lock();
            let mut unsettled: Vec<u64> = s.entries.keys().copied().collect();
            unsettled.extend(s.fetch.iter().copied());
            unsettled.sort_unstable();
            unsettled.dedup();
            Checkpoint {
                through: s.next_read,
                unsettled,
                settled_after: s.settled_after.iter().copied().collect(),
            }
        };
        records::append(
            &*self.state_store,
            &self.name,
            &self.name.acks_stream(),
            vec![records::event(records::CHECKPOINT, &c)],
            "write a checkpoint",
        )
        .await?;
        self.records_since_checkpoint.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Parked events not yet replayed, from revision `from` of the parked stream.
    pub async fn parked(
        &self,
        from: Option<u64>,
        limit: usize,
    ) -> GroupResult<(Vec<ParkedEvent>, Option<u64>)> {
        let cursor = self.state.lock().parked_cursor;
        let from = from.unwrap_or(cursor).max(cursor);
        let (entries, next) =
            records::read_parked(&*self.state_store, &self.name, from, limit).await?;
        Ok((entries.into_iter().map(|(_, p)| p).collect(), next))
    }

    /// Delivers up to `max` parked events again (oldest first); returns how many.
    pub async fn replay(&self, max: usize) -> GroupResult<usize> {
        let _one = self.replay_lock.lock().await;
        let cursor = self.state.lock().parked_cursor;
        let (entries, _) =
            records::read_parked(&*self.state_store, &self.name, cursor, max).await?;
        let Some(&(last_rev, _)) = entries.last() else {
            return Ok(0);
        };
        let positions: Vec<u64> = entries.iter().map(|(_, p)| p.position).collect();
        {
            let _gate = self.ack_gate.read().await;
            records::append(
                &*self.state_store,
                &self.name,
                &self.name.acks_stream(),
                vec![records::event(
                    records::REPLAYED,
                    &Replayed {
                        positions: positions.clone(),
                    },
                )],
                "record a replay",
            )
            .await?;
            let mut s = self.state.lock();
            for &p in &positions {
                s.settled_after.remove(&p);
                if !s.entries.contains_key(&p) {
                    s.fetch.insert(p);
                }
            }
        }
        self.records_since_checkpoint
            .fetch_add(1, Ordering::Relaxed);
        records::append(
            &*self.state_store,
            &self.name,
            &self.name.parked_stream(),
            vec![records::event(
                records::REPLAY_CURSOR,
                &ReplayCursor {
                    cursor: last_rev + 1,
                },
            )],
            "record a replay",
        )
        .await?;
        {
            let mut s = self.state.lock();
            s.parked_cursor = last_rev + 1;
            s.parked = s.parked.saturating_sub(positions.len() as u64);
        }
        self.wake_reader.notify_one();
        self.maybe_checkpoint().await?;
        Ok(positions.len())
    }

    /// The group's settings and figures.
    pub async fn info(&self) -> GroupResult<GroupInfo> {
        let (next_read, filter) = {
            let s = self.state.lock();
            (s.next_read, s.config.filter.clone())
        };
        let read = |limit: usize| {
            ReadAll::forward(limit)
                .from(ReadFrom::At(Position(next_read)))
                .filter(filter.event_filter())
        };
        let slice = match self.source.read_all(read(LAG_COUNT_MAX)).await {
            // A store configured with a smaller read limit: count up to that.
            Err(eventfold_core::StoreError::LimitExceeded { max, .. }) => {
                self.source
                    .read_all(read(usize::try_from(max).unwrap_or(1).max(1)))
                    .await
            }
            r => r,
        }
        .map_err(records::store_err(&self.name, "read the source"))?;
        let unread = slice
            .events
            .iter()
            .filter(|e| filter.matches_stream(e.stream.as_str()))
            .count() as u64;
        let now = Instant::now();
        let s = self.state.lock();
        let checkpoint = s.checkpoint_position();
        let mut consumers: Vec<ConsumerInfo> = s
            .consumers
            .iter()
            .map(|(n, c)| ConsumerInfo {
                name: n.to_string(),
                live: s.live(c, now),
                in_flight: c.in_flight,
                push_streams: c.push_streams,
            })
            .filter(|c| c.live || c.in_flight > 0)
            .collect();
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(GroupInfo {
            group: self.name.to_string(),
            config: s.config.clone(),
            start_position: s.start_position,
            checkpoint,
            lag: unread + (s.entries.len() + s.fetch.len()) as u64,
            in_flight: s.in_flight,
            unsettled: s.entries.len() + s.fetch.len(),
            parked: s.parked,
            delivered_total: s.counters.delivered,
            acked_total: s.counters.acked,
            retried_total: s.counters.retried,
            parked_total: s.counters.parked,
            consumers,
        })
    }
}
