//! The delivery window of one group: a pure state machine over the events read and not yet
//! settled. It decides who gets what (the in-flight bounds, `pinned` key ownership and per-key
//! order, a key being the event's stream or what the group's `pin_by` names), when a delivery
//! timed out, when a backoff is over and when an event must be
//! parked. It does no I/O and owns no clock: every method that depends on time takes `now`.
//!
//! A settle (ack, skip, park) is two steps around the durable write that the caller makes:
//! [`Window::claim`] (or a parking decision) moves a delivery to *settling*, where no timer can
//! fire on it and nobody can take it; then [`Window::settled`] forgets it, or
//! [`Window::unsettle`] makes it ready again when the write failed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventfold_core::RecordedEvent;

use crate::config::{GroupConfig, Strategy};
use crate::name::ConsumerName;

/// Events read ahead of delivery, beyond `max_in_flight`: keeps consumers fed without holding
/// more than a page or two of the source in memory.
pub const READ_AHEAD_EVENTS: usize = 512;
/// Most pinned key assignments kept; beyond it assignments of keys with nothing unsettled are
/// forgotten (those keys may then go to another live consumer).
pub const PINNED_KEYS_MAX: usize = 100_000;
/// Most consumers remembered per group (those neither live nor holding deliveries are dropped).
pub const CONSUMERS_MAX: usize = 10_000;

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

/// What an ack or nack did with each id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckOutcome {
    /// Ids settled (ack) or acted on (nack).
    pub acked: Vec<String>,
    /// Ids unknown, already settled or timed out: their events were or will be delivered again.
    pub unknown: Vec<String>,
}

/// Why positions left the window for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    Ack,
    Skip,
    Park,
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

/// A pin key: the event's stream name, or the value of the metadata field the group pins by
/// (shared between the entries of one key).
type Key = Arc<str>;

#[derive(Debug)]
struct Entry {
    event: Arc<RecordedEvent>,
    /// Its pin key under the current `pin_by`.
    key: Key,
    /// The number of the last delivery made (the `attempt` it was handed out with).
    attempts: u32,
    /// Failed attempts (nack `retry`, ack timeout) known: counted here, or recorded before a
    /// restart or by another server. The next delivery is attempt `max(attempts, failed) + 1`,
    /// and a failure parks the event once this reaches `max_deliveries`.
    failed: u32,
    last_reason: String,
    /// When the last delivery went out.
    delivered_at: Option<Instant>,
    state: EntryState,
}

/// How long a consumer held a delivery (from its delivery to its answer or timeout).
#[derive(Debug)]
pub(crate) struct Held {
    pub held: Duration,
    pub event: Arc<RecordedEvent>,
}

#[derive(Debug)]
pub(crate) struct Consumer {
    last_pull: Option<Instant>,
    pub push_streams: usize,
    pub in_flight: usize,
}

/// Figures counted since the window was built.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub delivered: u64,
    pub acked: u64,
    pub retried: u64,
    pub parked: u64,
}

/// What [`Window::tick`] decided.
#[derive(Debug, Default)]
pub(crate) struct Tick {
    /// Positions whose attempts are used up: settling, to be parked by the caller.
    pub park: Vec<u64>,
    /// Positions whose delivery timed out and that will be delivered again, with their failed
    /// attempts so far: for the caller to record.
    pub failed: Vec<(u64, u32)>,
    /// Whether anything became deliverable again.
    pub woke: bool,
    /// Deliveries whose ack timeout fired.
    pub timed_out: Vec<Held>,
}

/// What [`Window::retry`] decided.
#[derive(Debug, Default)]
pub(crate) struct Retry {
    /// Positions whose attempts are used up: settling, to be parked by the caller.
    pub park: Vec<u64>,
    /// Positions backing off, with their failed attempts so far: for the caller to record.
    pub failed: Vec<(u64, u32)>,
}

/// What a failed attempt leads to.
enum Failed {
    /// The attempts are used up: settling, to be parked.
    Park,
    /// Backing off (or ready again) after this many failed attempts.
    Again(u32),
}

/// An event to copy into the parked set.
#[derive(Debug)]
pub(crate) struct ToPark {
    pub event: Arc<RecordedEvent>,
    pub reason: String,
    pub attempts: u32,
}

/// The events read and not yet settled, and who holds which.
#[derive(Debug)]
pub(crate) struct Window {
    config: GroupConfig,
    /// Prefix of every delivery id: ids of another window (process, group) are unknown here.
    epoch: String,
    entries: BTreeMap<u64, Entry>,
    ready: BTreeSet<u64>,
    timers: BTreeSet<(Instant, u64)>,
    /// Per pin key, the entries held.
    by_key: HashMap<Key, BTreeSet<u64>>,
    /// Per pin key, the entries waiting for a (re)delivery (ready or backing off): under
    /// `pinned`, the first of them holds back every later event of its key.
    waiting: HashMap<Key, BTreeSet<u64>>,
    /// Per pin key, the consumer it is pinned to (`pinned` only).
    owners: HashMap<Key, ConsumerName>,
    consumers: HashMap<ConsumerName, Consumer>,
    in_flight: usize,
    counters: Counters,
}

fn parse_id(id: &str) -> Option<(&str, u64, u32)> {
    let mut it = id.splitn(3, '-');
    let epoch = it.next()?;
    let pos = it.next()?.parse().ok()?;
    let attempt = it.next()?.parse().ok()?;
    Some((epoch, pos, attempt))
}

impl Window {
    /// An empty window; `epoch` must not contain `-`.
    pub fn new(config: GroupConfig, epoch: String) -> Window {
        Window {
            config,
            epoch,
            entries: BTreeMap::new(),
            ready: BTreeSet::new(),
            timers: BTreeSet::new(),
            by_key: HashMap::new(),
            waiting: HashMap::new(),
            owners: HashMap::new(),
            consumers: HashMap::new(),
            in_flight: 0,
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Replaces the settings; deliveries already made keep their deadlines. A changed `pin_by`
    /// keys every held event again; a key is then pinned to the consumer holding its last
    /// delivery.
    pub fn set_config(&mut self, config: GroupConfig) {
        let rekey = config.pin_by != self.config.pin_by;
        self.config = config;
        if rekey {
            self.rekey();
        }
    }

    /// The pin key of `e` under the current `pin_by` (the one already held when there is one).
    fn key_of(&self, e: &RecordedEvent) -> Key {
        let key = self.config.pin_by.key_of(e);
        match self.by_key.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None if key == e.stream.as_str() => e.stream.as_arc().clone(),
            None => Arc::from(key),
        }
    }

    /// Keys every held entry again (after `pin_by` changed).
    fn rekey(&mut self) {
        self.by_key.clear();
        self.waiting.clear();
        self.owners.clear();
        let positions: Vec<u64> = self.entries.keys().copied().collect();
        for pos in positions {
            let key = self.key_of(&self.entries[&pos].event);
            let entry = self.entries.get_mut(&pos).expect("a held position");
            entry.key = key.clone();
            self.by_key.entry(key.clone()).or_default().insert(pos);
            match &entry.state {
                EntryState::Ready | EntryState::Backoff { .. } => {
                    self.waiting.entry(key).or_default().insert(pos);
                }
                EntryState::Delivered { consumer, .. } => {
                    self.owners.insert(key, consumer.clone());
                }
                EntryState::Settling => {}
            }
        }
    }

    /// Whether the reader may offer more events.
    pub fn has_room(&self) -> bool {
        self.entries.len() < self.config.max_in_flight + READ_AHEAD_EVENTS
    }

    /// Events held (ready, delivered, backing off or settling).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn contains(&self, pos: u64) -> bool {
        self.entries.contains_key(&pos)
    }

    /// The positions held, in order.
    pub fn positions(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.keys().copied()
    }

    /// How many held positions fall in `range`.
    pub fn count_in(&self, range: std::ops::Range<u64>) -> usize {
        self.entries.range(range).count()
    }

    pub fn first_position(&self) -> Option<u64> {
        self.entries.keys().next().copied()
    }

    /// Deliveries not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The consumers seen, with whether each is live at `now`.
    pub fn consumers(
        &self,
        now: Instant,
    ) -> impl Iterator<Item = (&ConsumerName, &Consumer, bool)> {
        self.consumers
            .iter()
            .map(move |(n, c)| (n, c, self.live(c, now)))
    }

    fn live(&self, c: &Consumer, now: Instant) -> bool {
        c.push_streams > 0
            || c.last_pull
                .is_some_and(|t| now < t + self.config.ack_timeout())
    }

    /// Adds a read event, ready for delivery (an event already held is ignored).
    pub fn offer(&mut self, e: RecordedEvent) {
        let pos = e.position.0;
        if self.entries.contains_key(&pos) {
            return;
        }
        let key = self.key_of(&e);
        self.by_key.entry(key.clone()).or_default().insert(pos);
        self.waiting.entry(key.clone()).or_default().insert(pos);
        self.entries.insert(
            pos,
            Entry {
                event: Arc::new(e),
                key,
                attempts: 0,
                failed: 0,
                last_reason: String::new(),
                delivered_at: None,
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
        let waits = |s: &EntryState| matches!(s, EntryState::Ready | EntryState::Backoff { .. });
        match (waits(&entry.state), waits(&new)) {
            (false, true) => {
                self.waiting
                    .entry(entry.key.clone())
                    .or_default()
                    .insert(pos);
            }
            (true, false) => {
                if let Some(set) = self.waiting.get_mut(&entry.key) {
                    set.remove(&pos);
                    if set.is_empty() {
                        self.waiting.remove(&entry.key);
                    }
                }
            }
            _ => {}
        }
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
        if let Some(entry) = self.entries.remove(&pos)
            && let Some(set) = self.by_key.get_mut(&entry.key)
        {
            set.remove(&pos);
            if set.is_empty() {
                self.by_key.remove(&entry.key);
            }
        }
    }

    /// A failed attempt of the current delivery: back off, or settling when the attempts are
    /// used up (the caller parks it). `None` for a position not held.
    fn fail(&mut self, pos: u64, reason: String, now: Instant) -> Option<Failed> {
        let entry = self.entries.get_mut(&pos)?;
        entry.last_reason = reason;
        entry.failed = entry.failed.max(entry.attempts);
        let failed = entry.failed;
        self.counters.retried += 1;
        if failed >= self.config.max_deliveries {
            self.set_state(pos, EntryState::Settling);
            return Some(Failed::Park);
        }
        let delay = self.config.retry_backoff.delay(failed);
        if delay.is_zero() {
            self.set_state(pos, EntryState::Ready);
        } else {
            self.set_state(pos, EntryState::Backoff { until: now + delay });
        }
        Some(Failed::Again(failed))
    }

    /// Raises the failed attempts known of `pos` to at least `failed` (recorded before a
    /// restart, or by another server); returns whether the window holds `pos`.
    pub fn raise_failed(&mut self, pos: u64, failed: u32) -> bool {
        match self.entries.get_mut(&pos) {
            Some(e) => {
                e.failed = e.failed.max(failed);
                true
            }
            None => false,
        }
    }

    /// The held positions with failed attempts, with their counts (for a checkpoint).
    pub fn failed_counts(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.entries
            .iter()
            .filter(|(_, e)| e.failed > 0)
            .map(|(&p, e)| (p, e.failed))
    }

    /// Whether `pos` (of pin key `key`) may go to `consumer` now under the pinned strategy.
    fn pinned_allows(
        &mut self,
        pos: u64,
        key: &Key,
        consumer: &ConsumerName,
        now: Instant,
    ) -> bool {
        // An earlier event of the key waiting for a (re)delivery holds this one back.
        if self
            .waiting
            .get(key)
            .and_then(BTreeSet::first)
            .is_some_and(|&first| first < pos)
        {
            return false;
        }
        match self.owners.get(key) {
            Some(owner) if owner == consumer => true,
            Some(owner) if self.consumers.get(owner).is_some_and(|c| self.live(c, now)) => false,
            _ => {
                if self.owners.len() >= PINNED_KEYS_MAX {
                    let by_key = &self.by_key;
                    self.owners.retain(|k, _| by_key.contains_key(k));
                }
                self.owners.insert(key.clone(), consumer.clone());
                true
            }
        }
    }

    /// A pull by `consumer` at `now`: marks it live and hands it up to `max` ready events, in
    /// position order, within the group's and the consumer's in-flight bounds, and up to
    /// [`crate::PULL_DATA_BYTES_MAX`] of data and metadata (the event that reaches it is the last).
    pub fn take(&mut self, consumer: &ConsumerName, max: usize, now: Instant) -> Vec<Delivery> {
        self.touch(consumer, now, true);
        let mut out = Vec::new();
        let mut cursor = 0u64;
        let mine_max = self.config.consumer_in_flight_max();
        let mut mine = self.consumers.get(consumer).map_or(0, |c| c.in_flight);
        let mut bytes = 0usize;
        while out.len() < max
            && self.in_flight < self.config.max_in_flight
            && mine < mine_max
            && bytes < crate::PULL_DATA_BYTES_MAX
        {
            let Some(&pos) = self.ready.range(cursor..).next() else {
                break;
            };
            cursor = pos + 1;
            if self.config.strategy == Strategy::Pinned {
                let key = self.entries[&pos].key.clone();
                if !self.pinned_allows(pos, &key, consumer, now) {
                    continue;
                }
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
            entry.attempts = entry.attempts.max(entry.failed) + 1;
            entry.delivered_at = Some(now);
            self.counters.delivered += 1;
            bytes += entry.event.data.len() + entry.event.metadata.json_len();
            out.push(Delivery {
                delivery_id: format!("{}-{pos}-{}", self.epoch, entry.attempts),
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

    /// Counts an open push stream of `consumer` (live while counted).
    pub fn push_opened(&mut self, consumer: &ConsumerName, now: Instant) {
        self.touch(consumer, now, false).push_streams += 1;
    }

    /// Ends a push stream of `consumer` (it stays live for one ack timeout, as after a pull).
    pub fn push_closed(&mut self, consumer: &ConsumerName, now: Instant) {
        let c = self.touch(consumer, now, true);
        c.push_streams = c.push_streams.saturating_sub(1);
    }

    /// Finds the current deliveries the ids name and moves them to settling; returns their
    /// positions (the caller then settles, retries or unsettles them).
    pub fn claim(&mut self, ids: &[String], out: &mut AckOutcome) -> Vec<u64> {
        let mut taken = Vec::new();
        for id in ids {
            let ok = parse_id(id).and_then(|(epoch, pos, attempt)| {
                let e = self.entries.get(&pos)?;
                (epoch == self.epoch
                    && e.attempts == attempt
                    && matches!(e.state, EntryState::Delivered { .. }))
                .then_some(pos)
            });
            match ok {
                Some(pos) => {
                    self.set_state(pos, EntryState::Settling);
                    taken.push(pos);
                    out.acked.push(id.clone());
                }
                None => out.unknown.push(id.clone()),
            }
        }
        taken
    }

    /// The events of the current deliveries the ids name (unknown or stale ids are left out),
    /// without claiming them: what an ack or nack span links to.
    pub fn delivered_events(&self, ids: &[String]) -> Vec<Arc<RecordedEvent>> {
        ids.iter()
            .filter_map(|id| {
                let (epoch, pos, attempt) = parse_id(id)?;
                let e = self.entries.get(&pos)?;
                (epoch == self.epoch
                    && e.attempts == attempt
                    && matches!(e.state, EntryState::Delivered { .. }))
                .then(|| e.event.clone())
            })
            .collect()
    }

    /// How long each of `positions` (held, e.g. just claimed) has been out since its last
    /// delivery, at `now`.
    pub fn held(&self, positions: &[u64], now: Instant) -> Vec<Held> {
        positions
            .iter()
            .filter_map(|p| self.entries.get(p))
            .filter_map(|e| {
                Some(Held {
                    held: now.saturating_duration_since(e.delivered_at?),
                    event: e.event.clone(),
                })
            })
            .collect()
    }

    /// Claimed positions that failed (a nack `retry`): they back off, or stay settling when
    /// their attempts are used up (for the caller to park).
    pub fn retry(&mut self, positions: Vec<u64>, reason: &str, now: Instant) -> Retry {
        let mut out = Retry::default();
        for p in positions {
            match self.fail(p, reason.to_owned(), now) {
                Some(Failed::Park) => out.park.push(p),
                Some(Failed::Again(n)) => out.failed.push((p, n)),
                None => {}
            }
        }
        out
    }

    /// Records why claimed positions are about to be parked.
    pub fn set_reason(&mut self, positions: &[u64], reason: &str) {
        for p in positions {
            if let Some(e) = self.entries.get_mut(p) {
                e.last_reason = reason.to_owned();
            }
        }
    }

    /// What to copy into the parked set for settling positions.
    pub fn to_park(&self, positions: &[u64]) -> Vec<ToPark> {
        positions
            .iter()
            .filter_map(|p| self.entries.get(p))
            .map(|e| ToPark {
                event: e.event.clone(),
                reason: e.last_reason.clone(),
                attempts: e.attempts.max(e.failed),
            })
            .collect()
    }

    /// Settling positions made durable: forgotten for good.
    pub fn settled(&mut self, positions: &[u64], how: Settle) {
        for &p in positions {
            self.remove(p);
        }
        let n = positions.len() as u64;
        match how {
            Settle::Ack => self.counters.acked += n,
            Settle::Skip => {}
            Settle::Park => self.counters.parked += n,
        }
    }

    /// Puts back deliveries just taken that could not be handed out after all (with a shared
    /// state store: another server's records came first): ready again, as if never taken.
    pub fn untake(&mut self, deliveries: &[Delivery]) {
        for d in deliveries {
            let pos = d.event.position.0;
            let taken = self.entries.get(&pos).is_some_and(|e| {
                e.attempts == d.attempt && matches!(e.state, EntryState::Delivered { .. })
            });
            if !taken {
                continue;
            }
            self.set_state(pos, EntryState::Ready);
            if let Some(e) = self.entries.get_mut(&pos) {
                e.attempts -= 1;
            }
            self.counters.delivered = self.counters.delivered.saturating_sub(1);
        }
    }

    /// Positions settled by another server sharing the state store: forgotten, whatever their
    /// state here (a delivery of one here is then unknown to an ack), and not counted as this
    /// server's.
    pub fn forget(&mut self, positions: &[u64]) {
        for &p in positions {
            self.remove(p);
        }
    }

    /// A position another server handed out until `until`: not delivered here before then. Only
    /// a ready or backing-off entry is held back; one delivered or settling here keeps its state.
    pub fn hold(&mut self, pos: u64, until: Instant) {
        let later = match self.entries.get(&pos).map(|e| &e.state) {
            Some(EntryState::Ready) => true,
            Some(EntryState::Backoff { until: u }) => *u < until,
            _ => false,
        };
        if later {
            self.set_state(pos, EntryState::Backoff { until });
        }
    }

    /// Settling positions whose durable write failed: ready again, delivered again.
    pub fn unsettle(&mut self, positions: &[u64]) {
        for &p in positions {
            if self.entries.contains_key(&p) {
                self.set_state(p, EntryState::Ready);
            }
        }
    }

    /// Fires every timer due at `now`: a delivery not acknowledged in time is a failed attempt
    /// (backoff, or parking when its attempts are used up); a backoff that is over makes its
    /// event ready.
    pub fn tick(&mut self, now: Instant) -> Tick {
        let mut out = Tick::default();
        while let Some(&(t, pos)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            match self.entries.get(&pos).map(|e| &e.state) {
                Some(EntryState::Delivered { deadline, .. }) if *deadline == t => {
                    let reason =
                        format!("not acknowledged within {} ms", self.config.ack_timeout_ms);
                    if let Some(held) = self.held(&[pos], now).pop() {
                        out.timed_out.push(held);
                    }
                    // Reinsert so that `set_state` finds and removes it consistently.
                    self.timers.insert((t, pos));
                    match self.fail(pos, reason, now) {
                        Some(Failed::Park) => out.park.push(pos),
                        Some(Failed::Again(n)) => out.failed.push((pos, n)),
                        None => {}
                    }
                    out.woke = true;
                }
                Some(EntryState::Backoff { until }) if *until == t => {
                    self.timers.insert((t, pos));
                    self.set_state(pos, EntryState::Ready);
                    out.woke = true;
                }
                _ => {}
            }
        }
        out
    }

    /// When [`Window::tick`] has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests;
