//! One consumer group: its tasks (the reader of the source, the timers, the long-polls) and the
//! operations on it. They wire the pure delivery [`Window`] to the stores and to tokio; durable
//! state goes through `persist`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eventfold_core::{
    EventStore, NewEvent, Position, ReadAll, ReadFrom, RecordedEvent, SubscribeFrom, Timestamp,
};
use futures::StreamExt as _;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::ParkedEvent;
use crate::config::GroupConfig;
use crate::error::GroupResult;
use crate::name::{ConsumerName, GroupName};
use crate::observe::{DeliveryOutcome, ObserverSlot};
use crate::persist::{self, Restored};
use crate::records::{
    CHECKPOINT, CLAIMED, Checkpoint, Claimed, ParkedRecord, RECORD_VERSION, REPLAYED, RETRIED,
    ReplayCursor, Replayed, Retried, SETTLED, SettleAction, Settled,
};
use crate::window::{AckOutcome, Delivery, Held, Settle, Window};

/// Ack records between two checkpoints: a restart reads at most this many records.
pub const CHECKPOINT_EVERY_RECORDS: u64 = 256;
/// Most events one info call reads ahead of the group's reader to count its lag: the count is
/// kept between calls, so each call reads only what was appended since the last one, and this
/// bounds the work of one call after a burst (the figure is then a lower bound until later
/// calls catch up).
pub const LAG_COUNT_MAX: usize = 10_000;
/// Events read per page while counting the lag.
const LAG_PAGE_EVENTS: usize = 1000;
/// Wait before reading the source again after it failed.
const SOURCE_RETRY: Duration = Duration::from_secs(1);
/// Acks records read per page when a shared group catches up with the other servers.
const SYNC_PAGE_RECORDS: usize = 100;
/// Attempts at claiming a take before a pull gives up for now (each lost attempt means another
/// server wrote first; the pull then waits as if nothing were ready).
const CLAIM_TRIES: usize = 8;
/// Attempts at opening a group whose interrupted parks must be recorded, when another server
/// sharing the state store keeps writing its acks stream meanwhile.
const OPEN_TRIES: usize = 8;
/// Most `(position, count)` pairs in one `retried` record (a record stays well below the
/// per-event size limit, like an ack record of `ACK_IDS_MAX` positions).
const RETRIED_PER_RECORD_MAX: usize = crate::ACK_IDS_MAX;

/// What a nack asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NackAction {
    /// Deliver again after the backoff (parked once `max_deliveries` attempts were made).
    Retry,
    /// Park it now.
    Park,
    /// Never deliver it again, like an ack.
    Skip,
}

/// A consumer as shown in a group's info.
#[derive(Clone, Debug)]
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
#[derive(Clone, Debug)]
pub struct GroupInfo {
    /// The group's name.
    pub group: String,
    /// Its settings.
    pub config: GroupConfig,
    /// The position the group started from.
    pub start_position: u64,
    /// Every position below this is settled (acked, skipped or parked).
    pub checkpoint: u64,
    /// Matching events not yet settled: those read and unsettled, plus those not yet read by
    /// the group's reader up to the end of the source. Exact when the count of unread events
    /// reached the end of the source during this call; after a burst of more than
    /// [`LAG_COUNT_MAX`] events since the previous call it is a lower bound until later calls
    /// catch up.
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
struct State {
    window: Window,
    start_position: u64,
    /// Where the sequential read of the source continues.
    next_read: u64,
    /// Positions before `next_read` to read one by one (after a restart or a replay).
    fetch: BTreeSet<u64>,
    /// Positions at or after `next_read` already settled (known from the acks after a restart).
    settled_after: BTreeSet<u64>,
    parked: u64,
    parked_cursor: u64,
    /// The lag count reaches up to here (`>= next_read`).
    tail_to: u64,
    /// Matching events in `[next_read, tail_to)`, settled or not.
    tail_matching: u64,
    /// Bumped when the filter changes: a count made under another filter is dropped.
    tail_gen: u64,
    /// With a shared state store: the revision of the last acks record applied here.
    acks_rev: Option<u64>,
    /// With a shared state store: positions another server handed out that are not in the
    /// window yet, with the deadline before which they are not delivered here.
    held: BTreeMap<u64, std::time::Instant>,
    /// Failed attempts recorded of unsettled positions not in the window yet (restored at
    /// start-up, or recorded by another server): given to the window when they are read.
    failed: BTreeMap<u64, u32>,
    /// Positions whose parked copy is written but whose `settled` record could not be: they stay
    /// settling (never delivered again) until the timer task records them.
    unrecorded_parks: Vec<u64>,
}

impl State {
    /// The reader passed `pos` (`>= next_read`); `matching` when it is one of the group's.
    fn passed(&mut self, pos: u64, matching: bool) {
        if matching && pos < self.tail_to {
            self.tail_matching = self.tail_matching.saturating_sub(1);
        }
        self.next_read = pos + 1;
        if self.tail_to <= self.next_read {
            self.tail_to = self.next_read;
            self.tail_matching = 0;
        }
    }

    /// Matching events not settled: the window, the positions to fetch, and the counted unread
    /// ones less those known settled or already held.
    fn lag(&self) -> u64 {
        let range = self.next_read..self.tail_to;
        let known = self.settled_after.range(range.clone()).count()
            + self.fetch.range(range.clone()).count()
            + self.window.count_in(range);
        (self.window.len() + self.fetch.len()) as u64
            + self.tail_matching.saturating_sub(known as u64)
    }

    /// Adds a read event to the window, held back when another server has it out, with the
    /// failed attempts recorded of it.
    fn offer(&mut self, e: RecordedEvent) {
        let pos = e.position.0;
        self.window.offer(e);
        if let Some(until) = self.held.remove(&pos) {
            self.window.hold(pos, until);
        }
        if let Some(n) = self.failed.remove(&pos) {
            self.window.raise_failed(pos, n);
        }
    }

    /// Raises the failed attempts known of `pos` (a `retried` record).
    fn raise_failed(&mut self, pos: u64, n: u32) {
        if !self.window.raise_failed(pos, n) {
            let known = self.failed.entry(pos).or_default();
            *known = (*known).max(n);
        }
    }

    /// Applies a record of the acks stream that this server did not apply yet: written by
    /// another server sharing the state store (or by an earlier attempt of this one whose
    /// answer was lost). Records at or below `acks_rev` are skipped, so each applies once.
    fn apply(&mut self, group: &GroupName, e: &RecordedEvent, clock: Clock) -> GroupResult<()> {
        if self.acks_rev.is_some_and(|r| e.revision.0 <= r) {
            return Ok(());
        }
        match e.event_type.as_str() {
            SETTLED => {
                let positions = persist::decode::<Settled>(group, e)?.positions;
                self.window.forget(&positions);
                for p in positions {
                    self.fetch.remove(&p);
                    self.held.remove(&p);
                    self.failed.remove(&p);
                    if p >= self.next_read {
                        self.settled_after.insert(p);
                    }
                }
            }
            REPLAYED => {
                let replayed = persist::decode::<Replayed>(group, e)?;
                for p in replayed.positions {
                    self.settled_after.remove(&p);
                    self.failed.remove(&p);
                    if !self.window.contains(p) {
                        self.fetch.insert(p);
                    }
                }
                if let Some(c) = replayed.parked_cursor {
                    self.parked_cursor = self.parked_cursor.max(c);
                }
            }
            RETRIED => {
                for (p, n) in persist::decode::<Retried>(group, e)?.failed {
                    self.raise_failed(p, n);
                }
            }
            CLAIMED => {
                let c = persist::decode::<Claimed>(group, e)?;
                let until = clock.instant(c.until_ms);
                for p in c.positions {
                    if self.window.contains(p) {
                        self.window.hold(p, until);
                    } else {
                        self.held.insert(p, until);
                    }
                }
            }
            // A checkpoint summarizes records already applied; other kinds are a newer
            // build's, to be skipped.
            _ => {}
        }
        self.acks_rev = Some(e.revision.0);
        Ok(())
    }

    fn checkpoint_position(&self) -> u64 {
        let first_entry = self.window.first_position();
        let first_fetch = self.fetch.first().copied();
        [first_entry, first_fetch, Some(self.next_read)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.next_read)
    }
}

fn settle_of(action: SettleAction) -> Settle {
    match action {
        SettleAction::Ack => Settle::Ack,
        SettleAction::Skip => Settle::Skip,
        SettleAction::Park => Settle::Park,
    }
}

/// The window's clock: tokio's (paused in tests), as a std instant.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Now on both clocks: the window's, and the wall clock that deadlines shared with other
/// servers are written in (milliseconds since the Unix epoch).
#[derive(Clone, Copy, Debug)]
struct Clock {
    now: std::time::Instant,
    wall_ms: u64,
}

impl Clock {
    fn read() -> Clock {
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Clock {
            now: now(),
            wall_ms,
        }
    }

    /// The window's instant of a wall-clock deadline.
    fn instant(self, wall_ms: u64) -> std::time::Instant {
        self.now + Duration::from_millis(wall_ms.saturating_sub(self.wall_ms))
    }
}

/// One consumer group.
pub(crate) struct Group {
    pub name: GroupName,
    source: Arc<dyn EventStore>,
    state_store: Arc<dyn EventStore>,
    /// Other servers keep the same group in the same state store (see `append_acks`).
    shared: bool,
    /// With a shared state store: one write of the acks stream at a time (with the catch-up
    /// before it), so that this server's records follow the last one it applied.
    write_lock: tokio::sync::Mutex<()>,
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
    /// Told how each delivery ended.
    observer: ObserverSlot,
    /// When the stored configuration was last read (with a shared state store).
    config_checked: Mutex<Instant>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Group {
    /// Builds the group from its stored state and starts its tasks.
    pub async fn open(
        name: GroupName,
        source: Arc<dyn EventStore>,
        state_store: Arc<dyn EventStore>,
        stored: crate::records::StoredConfig,
        observer: ObserverSlot,
        shared: bool,
    ) -> GroupResult<Arc<Group>> {
        let (
            Restored {
                next_read,
                fetch,
                settled_after,
                acks_rev,
                claimed,
                failed,
                parked_cursor: _,
            },
            restored_parked,
        ) = Group::restore(&*state_store, &name, stored.start_position).await?;
        let clock = Clock::read();
        let held = claimed
            .into_iter()
            .filter(|&(_, until_ms)| shared && until_ms > clock.wall_ms)
            .map(|(p, until_ms)| (p, clock.instant(until_ms)))
            .collect();
        let parked_cursor = restored_parked.cursor;
        let parked = restored_parked.count;
        let epoch = format!("{:08x}", uuid::Uuid::new_v4().as_u128() as u32);
        let group = Arc::new(Group {
            name,
            source,
            state_store,
            shared,
            write_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                window: Window::new(stored.config.into(), epoch),
                start_position: stored.start_position,
                next_read,
                fetch,
                settled_after,
                parked,
                parked_cursor,
                tail_to: next_read,
                tail_matching: 0,
                tail_gen: 0,
                acks_rev,
                held,
                failed,
                unrecorded_parks: Vec::new(),
            }),
            wake_consumers: Notify::new(),
            wake_reader: Notify::new(),
            wake_timer: Notify::new(),
            ack_gate: tokio::sync::RwLock::new(()),
            replay_lock: tokio::sync::Mutex::new(()),
            records_since_checkpoint: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            observer,
            config_checked: Mutex::new(Instant::now()),
        });
        group.start_tasks();
        Ok(group)
    }

    /// Rebuilds the delivery state and the parked set, and completes what a crash interrupted:
    /// a park whose parked copy was written but not its `settled` record is recorded now (the
    /// copy is the park's commit point: the event is not delivered again), and a replay whose
    /// `replay_cursor` marker was not written gets it.
    async fn restore(
        state: &dyn EventStore,
        name: &GroupName,
        start_position: u64,
    ) -> GroupResult<(Restored, persist::RestoredParked)> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut r = persist::restore_acks(state, name, start_position).await?;
            let mut parked =
                persist::restore_parked(state, name, r.parked_cursor, |p| r.unsettled(p)).await?;
            if parked.marker_behind {
                let marker = ReplayCursor {
                    version: RECORD_VERSION,
                    cursor: parked.cursor,
                };
                persist::write_replay_cursor(state, name, &marker).await?;
            }
            if parked.unrecorded.is_empty() {
                return Ok((r, parked));
            }
            if tries > OPEN_TRIES {
                tracing::warn!(group = %name, positions = ?parked.unrecorded, "cannot record interrupted parks while other servers write the group's state; those events may be parked again");
                return Ok((r, parked));
            }
            let events = parked
                .unrecorded
                .chunks(crate::ACK_IDS_MAX)
                .map(|c| {
                    let settled = Settled {
                        version: RECORD_VERSION,
                        action: SettleAction::Park,
                        positions: c.to_vec(),
                    };
                    persist::event(SETTLED, &settled)
                })
                .collect();
            // Right after the records just read: a record written meanwhile (a replay by
            // another server) may change what is unsettled, so read again then.
            if let Some(last) = persist::append_after(
                state,
                name,
                &name.acks_stream(),
                events,
                r.acks_rev,
                "record an interrupted park",
            )
            .await?
            {
                tracing::info!(group = %name, positions = ?parked.unrecorded, "recorded parks interrupted by a crash");
                r.settle(&parked.unrecorded);
                r.acks_rev = Some(last);
                parked.unrecorded.clear();
                return Ok((r, parked));
            }
        }
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
            let restart = s.window.config().filter != config.filter;
            if restart {
                s.tail_to = s.next_read;
                s.tail_matching = 0;
                s.tail_gen += 1;
            }
            s.window.set_config(config);
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

    /// The group's settings.
    pub fn config(&self) -> GroupConfig {
        self.state.lock().window.config().clone()
    }

    /// Whether the stored configuration was last read more than `every` ago.
    pub fn config_due(&self, every: Duration) -> bool {
        self.config_checked.lock().elapsed() >= every
    }

    /// The stored configuration was just read.
    pub fn config_checked(&self) {
        *self.config_checked.lock() = Instant::now();
    }

    /// Waits until the window has room.
    async fn wait_for_room(&self) {
        loop {
            let notified = self.wake_reader.notified();
            if self.state.lock().window.has_room() {
                return;
            }
            notified.await;
        }
    }

    async fn read_loop(self: Arc<Self>) {
        loop {
            let (from, filter) = {
                let s = self.state.lock();
                (s.next_read, s.window.config().filter.clone())
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
                            self.state.lock().offer(e);
                            self.wake_consumers.notify_waiters();
                        } else {
                            // The event can no longer be read: nothing to deliver.
                            self.state.lock().failed.remove(&pos);
                        }
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
                        let matching = filter.matches_stream(e.stream.as_str());
                        s.passed(pos, matching);
                        s.fetch.remove(&pos);
                        let settled = s.settled_after.remove(&pos);
                        if !s.settled_after.is_empty() {
                            s.settled_after = s.settled_after.split_off(&(pos + 1));
                        }
                        if settled || !matching {
                            s.failed.remove(&pos);
                            continue;
                        }
                        s.offer(e);
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
            let (tick, next) = {
                let mut s = self.state.lock();
                let tick = s.window.tick(now());
                (tick, s.window.next_deadline())
            };
            self.observer
                .report(&self.name, DeliveryOutcome::Timeout, &tick.timed_out);
            drop(tick.timed_out);
            if tick.woke {
                self.wake_consumers.notify_waiters();
            }
            if let Err(e) = self.record_failed(tick.failed).await {
                tracing::error!(group = %self.name, error = %e, "cannot record timed-out deliveries; their attempts count again after a restart");
            }
            if !tick.park.is_empty()
                && let Err(e) = self.settle_positions(tick.park, SettleAction::Park).await
            {
                tracing::error!(group = %self.name, error = %e, "cannot park events; they will be delivered again");
            }
            let unrecorded = std::mem::take(&mut self.state.lock().unrecorded_parks);
            let mut next = next;
            if !unrecorded.is_empty() {
                let gate = self.ack_gate.read().await;
                let r = self.record_settled(&unrecorded, SettleAction::Park).await;
                let mut s = self.state.lock();
                match r {
                    Ok(()) => {
                        s.window.settled(&unrecorded, Settle::Park);
                        s.parked += unrecorded.len() as u64;
                    }
                    Err(e) => {
                        tracing::error!(group = %self.name, error = %e, "cannot record parks; retrying");
                        s.unrecorded_parks.extend(unrecorded);
                        let retry = now() + SOURCE_RETRY;
                        next = Some(next.map_or(retry, |t| t.min(retry)));
                    }
                }
                drop(s);
                drop(gate);
            }
            match next {
                Some(t) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(Instant::from_std(t)) => {}
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
            let got = if self.shared {
                self.take_shared(consumer, max).await
            } else {
                self.state.lock().window.take(consumer, max, now.into_std())
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

    /// A take that the other servers sharing the state store learn of before it is handed out:
    /// this server first applies what they wrote, then records the take as a `claimed` record
    /// right after the last record it applied; when another server wrote first, the take is
    /// undone and made again on the newer state. So a delivery is made only on a state that
    /// holds every settle recorded before it, by any server.
    async fn take_shared(&self, consumer: &ConsumerName, max: usize) -> Vec<Delivery> {
        {
            // Nothing ready here: nothing to claim, no store round trip.
            let mut s = self.state.lock();
            let got = s.window.take(consumer, max, now());
            if got.is_empty() {
                return got;
            }
            s.window.untake(&got);
        }
        let _write = self.write_lock.lock().await;
        for _ in 0..CLAIM_TRIES {
            if let Err(e) = self.sync().await {
                tracing::warn!(group = %self.name, error = %e, "cannot read the group's shared state; delivering nothing for now");
                return Vec::new();
            }
            let clock = Clock::read();
            let (got, after, ack_timeout_ms) = {
                let mut s = self.state.lock();
                let got = s.window.take(consumer, max, clock.now);
                (got, s.acks_rev, s.window.config().ack_timeout_ms)
            };
            if got.is_empty() {
                return got;
            }
            let claim = Claimed {
                version: RECORD_VERSION,
                positions: got.iter().map(|d| d.event.position.0).collect(),
                until_ms: clock.wall_ms.saturating_add(ack_timeout_ms),
            };
            let written = persist::append_after(
                &*self.state_store,
                &self.name,
                &self.name.acks_stream(),
                vec![persist::event(CLAIMED, &claim)],
                after,
                "claim deliveries",
            )
            .await;
            let mut s = self.state.lock();
            match written {
                Ok(Some(last)) => {
                    s.acks_rev = Some(last);
                    return got;
                }
                Ok(None) => s.window.untake(&got),
                Err(e) => {
                    s.window.untake(&got);
                    tracing::warn!(group = %self.name, error = %e, "cannot claim deliveries in the group's shared state; delivering nothing for now");
                    return Vec::new();
                }
            }
        }
        Vec::new()
    }

    /// Applies the acks records written since the last one applied here (with a shared state
    /// store; the caller holds `write_lock`).
    async fn sync(&self) -> GroupResult<()> {
        loop {
            let after = self.state.lock().acks_rev;
            let records = persist::read_after(
                &*self.state_store,
                &self.name,
                &self.name.acks_stream(),
                after,
                SYNC_PAGE_RECORDS,
            )
            .await?;
            let clock = Clock::read();
            let mut s = self.state.lock();
            for e in &records {
                s.apply(&self.name, e, clock)?;
            }
            s.held.retain(|_, until| *until > clock.now);
            if records.len() < SYNC_PAGE_RECORDS {
                drop(s);
                self.wake_reader.notify_one();
                self.wake_timer.notify_one();
                return Ok(());
            }
        }
    }

    /// Appends records to the acks stream. With a shared state store the append goes right
    /// after the last record this server applied: when another server wrote first, its records
    /// are applied and `make` is asked again, so every server applies every record in the one
    /// order of the stream. `make` returning nothing writes nothing.
    async fn append_acks(
        &self,
        mut make: impl FnMut(&State) -> Vec<NewEvent>,
        context: &'static str,
    ) -> GroupResult<()> {
        let stream = self.name.acks_stream();
        if !self.shared {
            let events = make(&self.state.lock());
            if events.is_empty() {
                return Ok(());
            }
            return persist::append(&*self.state_store, &self.name, &stream, events, context).await;
        }
        let _write = self.write_lock.lock().await;
        loop {
            let (events, after) = {
                let s = self.state.lock();
                (make(&s), s.acks_rev)
            };
            if events.is_empty() {
                return Ok(());
            }
            match persist::append_after(
                &*self.state_store,
                &self.name,
                &stream,
                events,
                after,
                context,
            )
            .await?
            {
                Some(last) => {
                    self.state.lock().acks_rev = Some(last);
                    return Ok(());
                }
                None => self.sync().await?,
            }
        }
    }

    /// Counts an open push stream of `consumer` (live while counted).
    pub fn push_opened(&self, consumer: &ConsumerName) {
        self.state.lock().window.push_opened(consumer, now());
    }

    /// Ends a push stream of `consumer`.
    pub fn push_closed(&self, consumer: &ConsumerName) {
        self.state.lock().window.push_closed(consumer, now());
    }

    /// Claims the deliveries `ids` names (see [`Window::claim`]), with how long each was held
    /// when an observer wants to know.
    fn claim(&self, ids: &[String], out: &mut AckOutcome) -> (Vec<u64>, Vec<Held>) {
        let mut s = self.state.lock();
        let taken = s.window.claim(ids, out);
        let held = if self.observer.is_set() {
            s.window.held(&taken, now())
        } else {
            Vec::new()
        };
        (taken, held)
    }

    /// The events of the current deliveries `ids` names (see [`Window::delivered_events`]).
    pub fn delivered_events(&self, ids: &[String]) -> Vec<Arc<RecordedEvent>> {
        self.state.lock().window.delivered_events(ids)
    }

    /// Acknowledges deliveries: durable before this returns.
    pub async fn ack(&self, ids: &[String]) -> GroupResult<AckOutcome> {
        let mut out = AckOutcome::default();
        let (taken, held) = self.claim(ids, &mut out);
        self.settle_positions(taken, SettleAction::Ack).await?;
        self.observer
            .report(&self.name, DeliveryOutcome::Ack, &held);
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
        let (taken, held) = self.claim(ids, &mut out);
        match action {
            NackAction::Skip => self.settle_positions(taken, SettleAction::Skip).await?,
            NackAction::Park => {
                self.state.lock().window.set_reason(&taken, reason);
                self.settle_positions(taken, SettleAction::Park).await?;
            }
            NackAction::Retry => {
                let retry = self.state.lock().window.retry(taken, reason, now());
                self.wake_timer.notify_one();
                self.wake_consumers.notify_waiters();
                let recorded = self.record_failed(retry.failed).await;
                self.settle_positions(retry.park, SettleAction::Park)
                    .await?;
                recorded?;
            }
        }
        self.observer
            .report(&self.name, DeliveryOutcome::Nack, &held);
        Ok(out)
    }

    /// Makes settling positions durable (parking them first when asked) and forgets them; on
    /// failure they become ready again and will be delivered again.
    async fn settle_positions(&self, positions: Vec<u64>, action: SettleAction) -> GroupResult<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let gate = self.ack_gate.read().await;
        // A park copies the events first; a copy written is the park's commit point.
        let (copied, to_record) = if action == SettleAction::Park {
            let mut copied = Vec::new();
            let r = self.copy_parked(&positions, &mut copied).await;
            (r, copied)
        } else {
            (Ok(()), positions.clone())
        };
        let recorded = if to_record.is_empty() {
            Ok(())
        } else {
            self.record_settled(&to_record, action).await
        };
        {
            let mut s = self.state.lock();
            if to_record.len() < positions.len() {
                // Not copied (the copy failed): ready again, delivered again.
                let kept: std::collections::HashSet<u64> = to_record.iter().copied().collect();
                let lost: Vec<u64> = positions
                    .iter()
                    .copied()
                    .filter(|p| !kept.contains(p))
                    .collect();
                s.window.unsettle(&lost);
            }
            match (&recorded, action) {
                (Ok(()), _) => {
                    s.window.settled(&to_record, settle_of(action));
                    if action == SettleAction::Park {
                        s.parked += to_record.len() as u64;
                    }
                }
                // Parked already: kept settling until the timer task records them.
                (Err(_), SettleAction::Park) => s.unrecorded_parks.extend(&to_record),
                (Err(_), _) => s.window.unsettle(&to_record),
            }
        }
        drop(gate);
        self.wake_reader.notify_one();
        self.wake_consumers.notify_waiters();
        if recorded.is_err() && action == SettleAction::Park {
            self.wake_timer.notify_one();
        }
        copied?;
        recorded?;
        self.records_since_checkpoint
            .fetch_add(1, Ordering::Relaxed);
        self.maybe_checkpoint().await
    }

    /// Records failed attempts that will be retried (a nack `retry`, ack timeouts), so that the
    /// attempt count survives a restart and is known to other servers sharing the state store.
    async fn record_failed(&self, failed: Vec<(u64, u32)>) -> GroupResult<()> {
        if failed.is_empty() {
            return Ok(());
        }
        let gate = self.ack_gate.read().await;
        let events: Vec<NewEvent> = failed
            .chunks(RETRIED_PER_RECORD_MAX)
            .map(|c| {
                let retried = Retried {
                    version: RECORD_VERSION,
                    failed: c.to_vec(),
                };
                persist::event(RETRIED, &retried)
            })
            .collect();
        self.append_acks(|_| events.clone(), "record failed attempts")
            .await?;
        drop(gate);
        self.records_since_checkpoint
            .fetch_add(1, Ordering::Relaxed);
        self.maybe_checkpoint().await
    }

    /// Copies the events at settling `positions` into the parked stream; `copied` gets the
    /// positions copied (on an error, those copied before it).
    async fn copy_parked(&self, positions: &[u64], copied: &mut Vec<u64>) -> GroupResult<()> {
        let parked: Vec<ParkedRecord> = {
            let s = self.state.lock();
            let at = Timestamp::now().to_string();
            s.window
                .to_park(positions)
                .into_iter()
                .map(|p| ParkedRecord {
                    version: RECORD_VERSION,
                    event: serde_json::value::to_raw_value(&*p.event)
                        .expect("events always serialize"),
                    position: p.event.position.0,
                    reason: p.reason,
                    attempts: p.attempts,
                    parked_at: at.clone(),
                })
                .collect()
        };
        persist::write_parked(&*self.state_store, &self.name, parked, copied).await
    }

    /// Appends the `settled` record of `positions`.
    async fn record_settled(&self, positions: &[u64], action: SettleAction) -> GroupResult<()> {
        let settled = Settled {
            version: RECORD_VERSION,
            action,
            positions: positions.to_vec(),
        };
        let record = persist::event(SETTLED, &settled);
        self.append_acks(|_| vec![record.clone()], "record acknowledgements")
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
        self.append_acks(
            |s| {
                let mut unsettled: Vec<u64> = s.window.positions().collect();
                unsettled.extend(s.fetch.iter().copied());
                unsettled.sort_unstable();
                unsettled.dedup();
                let mut failed: Vec<(u64, u32)> = s.window.failed_counts().collect();
                failed.extend(s.failed.iter().map(|(&p, &n)| (p, n)).filter(|&(p, _)| {
                    s.fetch.contains(&p) || (p >= s.next_read && !s.settled_after.contains(&p))
                }));
                failed.sort_unstable();
                let c = Checkpoint {
                    version: RECORD_VERSION,
                    through: s.next_read,
                    unsettled,
                    settled_after: s.settled_after.iter().copied().collect(),
                    failed,
                    parked_cursor: Some(s.parked_cursor),
                };
                vec![persist::event(CHECKPOINT, &c)]
            },
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
            persist::read_parked(&*self.state_store, &self.name, from, limit).await?;
        let parked = entries
            .into_iter()
            .map(|(_, p)| ParkedEvent {
                event: p.event,
                position: p.position,
                reason: p.reason,
                attempts: p.attempts,
                parked_at: p.parked_at,
            })
            .collect();
        Ok((parked, next))
    }

    /// Delivers up to `max` parked events again (oldest first); returns how many.
    pub async fn replay(&self, max: usize) -> GroupResult<usize> {
        let _one = self.replay_lock.lock().await;
        if self.shared {
            // Another server may have replayed or parked since this one looked.
            let known = self.state.lock().parked_cursor;
            let restored =
                persist::restore_parked(&*self.state_store, &self.name, known, |_| false).await?;
            let mut s = self.state.lock();
            s.parked_cursor = s.parked_cursor.max(restored.cursor);
            s.parked = restored.count;
        }
        let cursor = self.state.lock().parked_cursor;
        let (entries, _) =
            persist::read_parked(&*self.state_store, &self.name, cursor, max).await?;
        let Some(&(last_rev, _)) = entries.last() else {
            return Ok(0);
        };
        let positions: Vec<u64> = entries.iter().map(|(_, p)| p.position).collect();
        {
            let _gate = self.ack_gate.read().await;
            let replayed = Replayed {
                version: RECORD_VERSION,
                positions: positions.clone(),
                parked_cursor: Some(last_rev + 1),
            };
            let record = persist::event(REPLAYED, &replayed);
            self.append_acks(|_| vec![record.clone()], "record a replay")
                .await?;
            let mut s = self.state.lock();
            for &p in &positions {
                s.settled_after.remove(&p);
                s.failed.remove(&p);
                if !s.window.contains(p) {
                    s.fetch.insert(p);
                }
            }
        }
        self.records_since_checkpoint
            .fetch_add(1, Ordering::Relaxed);
        let cursor = ReplayCursor {
            version: RECORD_VERSION,
            cursor: last_rev + 1,
        };
        persist::write_replay_cursor(&*self.state_store, &self.name, &cursor).await?;
        {
            let mut s = self.state.lock();
            s.parked_cursor = last_rev + 1;
            s.parked = s.parked.saturating_sub(positions.len() as u64);
        }
        self.wake_reader.notify_one();
        self.maybe_checkpoint().await?;
        Ok(positions.len())
    }

    /// Extends the count of unread matching events towards the end of the source, reading at
    /// most [`LAG_COUNT_MAX`] events past where the count reached.
    async fn count_unread(&self) -> GroupResult<()> {
        let (mut to, generation, filter) = {
            let s = self.state.lock();
            (s.tail_to, s.tail_gen, s.window.config().filter.clone())
        };
        let mut counted = Vec::new();
        // Reads are bounded too, not only events: a filtered read may scan far and find little.
        for _ in 0..LAG_COUNT_MAX / LAG_PAGE_EVENTS {
            let read = |limit: usize| {
                ReadAll::forward(limit)
                    .from(ReadFrom::At(Position(to)))
                    .filter(filter.event_filter())
            };
            let slice = match self.source.read_all(read(LAG_PAGE_EVENTS)).await {
                // A store configured with a smaller read limit: read pages of that.
                Err(eventfold_core::StoreError::LimitExceeded { max, .. }) => {
                    self.source
                        .read_all(read(usize::try_from(max).unwrap_or(1).max(1)))
                        .await
                }
                r => r,
            }
            .map_err(persist::store_err(&self.name, "read the source"))?;
            counted.extend(
                slice
                    .events
                    .iter()
                    .filter(|e| filter.matches_stream(e.stream.as_str()))
                    .map(|e| e.position.0),
            );
            match (slice.next, slice.events.last()) {
                (Some(next), _) => to = to.max(next.0),
                (None, Some(last)) => {
                    to = to.max(last.position.0 + 1);
                    break;
                }
                (None, None) => break,
            }
        }
        let mut s = self.state.lock();
        if s.tail_gen == generation && to > s.tail_to {
            // The reader may have passed part of what was counted meanwhile.
            let from = s.tail_to;
            s.tail_matching += counted.iter().filter(|&&p| p >= from).count() as u64;
            s.tail_to = to;
        }
        Ok(())
    }

    /// The group's settings and figures.
    pub async fn info(&self) -> GroupResult<GroupInfo> {
        self.count_unread().await?;
        let now = now();
        let s = self.state.lock();
        let checkpoint = s.checkpoint_position();
        let mut consumers: Vec<ConsumerInfo> = s
            .window
            .consumers(now)
            .map(|(n, c, live)| ConsumerInfo {
                name: n.to_string(),
                live,
                in_flight: c.in_flight,
                push_streams: c.push_streams,
            })
            .filter(|c| c.live || c.in_flight > 0)
            .collect();
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        let counters = s.window.counters();
        let unsettled = s.window.len() + s.fetch.len();
        Ok(GroupInfo {
            group: self.name.to_string(),
            config: s.window.config().clone(),
            start_position: s.start_position,
            checkpoint,
            lag: s.lag(),
            in_flight: s.window.in_flight(),
            unsettled,
            parked: s.parked,
            delivered_total: counters.delivered,
            acked_total: counters.acked,
            retried_total: counters.retried,
            parked_total: counters.parked,
            consumers,
        })
    }
}
