//! The live hub: one reader of the store's log for every live subscription of the server.
//!
//! Without it each of N live subscribers wakes on every commit and reads, decodes and encodes
//! the commit's events itself (N store cursors, N index lookups and `pread`s per commit). With
//! it one task ([`Hub`]) follows `$all` through a single store subscription, encodes each event
//! once, and keeps the newest events in a bounded ring ([`LiveRing`]); live subscribers take
//! their events from the ring (sharing the decoded event and its encoded line), filter them by
//! their own stream or filter, and write them out.
//!
//! The ring says exactly what it holds: every event of `$all` with a position in
//! `from..to` (`from` moves up as old events are evicted). A subscriber that delivered every
//! event it wants below position `next` may take the rest from the ring if `next >= from`;
//! otherwise it is behind the ring and reads from the store with its own cursor, from exactly
//! where it is, until it is back within the ring. So a subscriber never waits on an unbounded
//! queue, and the switches in either direction have no gap and no duplicate: both sides of a
//! switch are the one position `next`.
//!
//! The hub runs only while some subscription holds a [`Lease`]; when it stops or its store
//! subscription fails, the ring is cleared and every subscriber falls back to its own cursor.
//!
//! Wake-ups are targeted: each live subscription registers a [`Waiter`] with what it wants,
//! and a push wakes only the waiters that want one of its events (a stream subscription is
//! found by its stream's name, an `$all` subscription's filter is asked once per push), so a
//! thousand subscribers of a thousand streams are not all woken for every commit. A waiter's
//! wake-up is a permit ([`tokio::sync::Notify`]): one given while it is not waiting is kept,
//! so a push between a subscriber's take and its wait is never missed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use eventfold_core::{
    Direction, EventFilter, EventStore, Position, ReadAll, ReadFrom, RecordedEvent, StreamName,
    SubscribeFrom,
};
use futures::StreamExt as _;
use tokio::sync::Notify;

use crate::encoded::EncodedEvents;
use crate::metrics::Metrics;

/// Events the ring holds at most: at 10,000 events/s the last 0.8 s (small events reach the
/// byte bound first).
pub const LIVE_EVENTS_MAX: usize = 8_192;
/// Bytes the ring holds at most, counting each event's data and metadata and its encoded line:
/// about 12,000 events of 256 B (1.2 s at 10,000 events/s; the event bound comes first), and
/// a few largest batches (1 MiB of data and its lines). A batch may briefly add one chunk's
/// worth ([`crate::CHUNK_DATA_BYTES_MAX`]) before eviction. `stalled_sse_readers_do_not_grow_server_memory`
/// in eventfold-cli's tests grows the server by 6–14 MiB with it (4 KB events, four stalled
/// readers, limit 48 MiB). That test once saw 60 MiB at 8 MiB and 31 MiB at 2 MiB: most of it
/// was mimalloc keeping what the append path had freed (22–29 MiB with no reader at all,
/// 7 MiB with glibc's malloc), which the test now warms up before its baseline.
pub const LIVE_BYTES_MAX: usize = 8 << 20;
/// Pause before the hub starts again after its store subscription failed.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// An event and its JSON line (the contract's JSON form and `\n`), shared by every subscriber.
#[derive(Debug)]
pub struct LiveEvent {
    /// The event as the store returned it.
    pub event: RecordedEvent,
    /// Its JSON line.
    pub line: Bytes,
}

impl LiveEvent {
    /// Bytes the event and its line take, for the ring's budget.
    fn weight(&self) -> usize {
        self.event.data.len() + self.event.metadata.json_len() + self.line.len()
    }

    /// Bytes of data and metadata, for a chunk's budget.
    pub fn data_bytes(&self) -> usize {
        self.event.data.len() + self.event.metadata.json_len()
    }
}

/// Which events a subscription wants, decided on the values its request was parsed into (and
/// authorized on).
#[derive(Debug, Clone)]
pub enum Interest {
    /// The events of one stream.
    Stream(StreamName),
    /// The events of `$all` that pass the filter.
    All(EventFilter),
}

impl Interest {
    /// Whether `e` is one of them.
    pub fn takes(&self, e: &RecordedEvent) -> bool {
        match self {
            Interest::Stream(s) => e.stream == *s,
            Interest::All(f) => f.matches_event(e),
        }
    }
}

/// At most how much one take hands out: the bounds of one chunk.
#[derive(Debug, Clone, Copy)]
pub struct TakeLimits {
    /// Events.
    pub events: usize,
    /// Data and metadata bytes: the take ends at the first event that reaches it.
    pub data_bytes: usize,
}

/// What [`LiveRing::take`] found.
#[derive(Debug)]
pub enum Take {
    /// The ring no longer (or does not yet) hold everything from the cursor on: read from the
    /// store instead.
    Behind,
    /// The wanted events from the cursor on, up to the limits (empty: nothing yet); the cursor
    /// moved past everything scanned.
    Events(Vec<Arc<LiveEvent>>),
}

/// The newest events of `$all`, in position order, bounded in events and bytes
/// ([`LIVE_EVENTS_MAX`], [`LIVE_BYTES_MAX`] for the server's).
#[derive(Debug)]
pub struct LiveRing {
    events: VecDeque<Arc<LiveEvent>>,
    /// Every event with a position in `from..to` is held (`u64::MAX`: nothing is).
    from: u64,
    to: u64,
    bytes: usize,
    events_max: usize,
    bytes_max: usize,
    /// Which run of the hub may push: a stopped run's late pushes are refused.
    generation: u64,
}

impl LiveRing {
    /// An empty ring that holds nothing yet, bounded by `events_max` and `bytes_max`.
    pub fn new(events_max: usize, bytes_max: usize) -> Self {
        LiveRing {
            events: VecDeque::new(),
            from: u64::MAX,
            to: u64::MAX,
            bytes: 0,
            events_max: events_max.max(1),
            bytes_max,
            generation: 0,
        }
    }

    /// Where everything held begins (`u64::MAX` when nothing is).
    pub fn from(&self) -> u64 {
        self.from
    }

    /// Whether a subscriber with everything below `next` can continue from the ring.
    pub fn covers(&self, next: u64) -> bool {
        next >= self.from
    }

    /// Starts a new run of the hub at position `start` (the hub follows the log from there):
    /// empty, holding everything from `start` on. Returns the run's generation.
    pub fn start(&mut self, start: u64) -> u64 {
        self.clear();
        self.generation += 1;
        self.from = start;
        self.to = start;
        self.generation
    }

    /// Stops the current run: nothing is held, and its pushes are refused.
    pub fn stop(&mut self) {
        self.clear();
        self.generation += 1;
    }

    /// Stops the run `generation` if it is still the current one (a later run is left alone).
    pub fn stop_run(&mut self, generation: u64) {
        if generation == self.generation {
            self.stop();
        }
    }

    fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
        self.from = u64::MAX;
        self.to = u64::MAX;
    }

    /// Adds the run's next events (in position order, after everything held); evicts the oldest
    /// beyond the bounds. `false` (and nothing added) when the run was stopped.
    pub fn push(&mut self, generation: u64, batch: &[Arc<LiveEvent>]) -> bool {
        if generation != self.generation || self.from == u64::MAX {
            return false;
        }
        for e in batch {
            let e = e.clone();
            let p = e.event.position.0;
            if p < self.to {
                // The store's subscription is in order: this is a bug, never skip silently.
                tracing::error!(
                    position = p,
                    to = self.to,
                    "the live hub got an event out of order; subscribers fall back to the store"
                );
                self.stop();
                return false;
            }
            self.to = p + 1;
            self.bytes += e.weight();
            self.events.push_back(e);
        }
        while self.events.len() > self.events_max || self.bytes > self.bytes_max {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.bytes -= old.weight();
            self.from = old.event.position.0 + 1;
        }
        true
    }

    /// The events `interest` takes from `*next` on, up to `limits`; moves `*next` past what was
    /// scanned.
    pub fn take(&self, next: &mut u64, interest: &Interest, limits: TakeLimits) -> Take {
        if !self.covers(*next) {
            return Take::Behind;
        }
        let first = self.events.partition_point(|e| e.event.position.0 < *next);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in self.events.range(first..) {
            if out.len() >= limits.events || bytes >= limits.data_bytes {
                // Stop before `e`: the next take starts with it.
                *next = e.event.position.0;
                return Take::Events(out);
            }
            if interest.takes(&e.event) {
                bytes += e.data_bytes();
                out.push(e.clone());
            }
        }
        *next = (*next).max(self.to);
        Take::Events(out)
    }
}

/// State shared by the hub's task, the leases and the subscribers.
#[derive(Debug)]
struct Shared {
    ring: RwLock<LiveRing>,
    /// Who to wake after a push (those who want one of its events) or a stop (everyone).
    waiters: Mutex<Waiters>,
    control: Mutex<Control>,
}

impl Shared {
    /// Wakes the waiters that want one of `batch`'s events; returns how many.
    fn wake(&self, batch: &[Arc<LiveEvent>]) -> u64 {
        let w = lock(&self.waiters);
        let mut woken = 0u64;
        let mut streams: HashSet<&str> = HashSet::new();
        for e in batch {
            let stream = e.event.stream.as_str();
            if !streams.insert(stream) {
                continue;
            }
            for (_, n) in w.streams.get(stream).into_iter().flatten() {
                n.notify_one();
                woken += 1;
            }
        }
        for (_, filter, n) in &w.all {
            if batch.iter().any(|e| filter.matches_event(&e.event)) {
                n.notify_one();
                woken += 1;
            }
        }
        woken
    }

    /// Wakes every waiter (the ring was cleared: they must look again and fall back).
    fn wake_all(&self) {
        let w = lock(&self.waiters);
        for (_, n) in w.streams.values().flatten() {
            n.notify_one();
        }
        for (_, _, n) in &w.all {
            n.notify_one();
        }
    }
}

/// The registered waiters, by what they want.
#[derive(Debug, Default)]
struct Waiters {
    next_id: u64,
    streams: HashMap<Box<str>, Vec<(u64, Arc<Notify>)>>,
    all: Vec<(u64, EventFilter, Arc<Notify>)>,
}

/// A subscription's place among the hub's waiters; removed when dropped.
#[derive(Debug)]
pub struct Waiter {
    shared: Arc<Shared>,
    id: u64,
    /// The stream it waits for (`None`: an `$all` subscription).
    stream: Option<Box<str>>,
    notify: Arc<Notify>,
}

impl Waiter {
    /// Resolves at the first push with an event it wants, or a stop, since the last time it
    /// resolved (a wake-up given while nobody waits is kept for the next call).
    pub async fn woken(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut w = lock(&self.shared.waiters);
        match &self.stream {
            Some(stream) => {
                if let Some(v) = w.streams.get_mut(stream) {
                    v.retain(|(id, _)| *id != self.id);
                    if v.is_empty() {
                        w.streams.remove(stream);
                    }
                }
            }
            None => w.all.retain(|(id, _, _)| *id != self.id),
        }
    }
}

#[derive(Debug, Default)]
struct Control {
    leases: usize,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The server's live hub: see the module documentation.
#[derive(Debug, Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(LIVE_EVENTS_MAX, LIVE_BYTES_MAX)
    }
}

impl Hub {
    /// A hub whose ring holds at most `events_max` events and `bytes_max` bytes. Nothing runs
    /// until the first [`Hub::lease`].
    pub fn new(events_max: usize, bytes_max: usize) -> Self {
        Hub {
            shared: Arc::new(Shared {
                ring: RwLock::new(LiveRing::new(events_max, bytes_max)),
                waiters: Mutex::new(Waiters::default()),
                control: Mutex::new(Control::default()),
            }),
        }
    }

    /// Keeps the hub running (starting it if needed) for as long as the lease lives.
    pub fn lease(
        &self,
        store: &Arc<dyn EventStore>,
        encoded: &Arc<EncodedEvents>,
        metrics: &Arc<Metrics>,
    ) -> Lease {
        let mut c = lock(&self.shared.control);
        c.leases += 1;
        if c.task.is_none() {
            c.task = Some(tokio::spawn(run(
                self.shared.clone(),
                store.clone(),
                encoded.clone(),
                metrics.clone(),
            )));
        }
        Lease {
            shared: self.shared.clone(),
        }
    }

    /// Registers a waiter for `interest`: woken by the pushes that hold an event it wants,
    /// and by every stop.
    pub fn waiter(&self, interest: &Interest) -> Waiter {
        let notify = Arc::new(Notify::new());
        let mut w = lock(&self.shared.waiters);
        w.next_id += 1;
        let id = w.next_id;
        let stream = match interest {
            Interest::Stream(s) => {
                let key: Box<str> = s.as_str().into();
                w.streams
                    .entry(key.clone())
                    .or_default()
                    .push((id, notify.clone()));
                Some(key)
            }
            Interest::All(filter) => {
                w.all.push((id, filter.clone(), notify.clone()));
                None
            }
        };
        Waiter {
            shared: self.shared.clone(),
            id,
            stream,
            notify,
        }
    }

    /// Whether a subscriber with everything below `next` can continue from the ring.
    pub fn covers(&self, next: u64) -> bool {
        read(&self.shared.ring).covers(next)
    }

    /// See [`LiveRing::take`].
    pub fn take(&self, next: &mut u64, interest: &Interest, limits: TakeLimits) -> Take {
        read(&self.shared.ring).take(next, interest, limits)
    }

    /// Empties the ring and stops its run (every live subscription falls back to its own
    /// store cursor, which reads the events again; the hub restarts from the end of the log):
    /// after a subject's key was deleted, events decrypted before must not be served from
    /// memory.
    pub fn forget_events(&self) {
        write(&self.shared.ring).stop();
        self.shared.wake_all();
    }

    /// Whether the hub's task is running (for tests).
    pub fn running(&self) -> bool {
        lock(&self.shared.control).task.is_some()
    }

    /// Where the ring's events begin (`u64::MAX` when it holds nothing), for tests.
    pub fn from(&self) -> u64 {
        read(&self.shared.ring).from()
    }
}

/// Keeps the hub running; the last one dropped stops it and clears the ring.
#[derive(Debug)]
pub struct Lease {
    shared: Arc<Shared>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut c = lock(&self.shared.control);
        c.leases -= 1;
        if c.leases == 0 {
            if let Some(task) = c.task.take() {
                task.abort();
            }
            write(&self.shared.ring).stop();
            self.shared.wake_all();
        }
    }
}

// A poisoned lock only means a panic elsewhere while it was held; the ring's state is whole
// between its methods (each either finishes or leaves the previous state).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// The hub's task: finds the end of the log, follows `$all` from there through one store
/// subscription, and pushes each wake-up's events, encoded once, into the ring. Starts again
/// (with an empty ring) after a failure.
async fn run(
    shared: Arc<Shared>,
    store: Arc<dyn EventStore>,
    encoded: Arc<EncodedEvents>,
    metrics: Arc<Metrics>,
) {
    loop {
        let last = store
            .read_all(ReadAll {
                from: ReadFrom::End,
                direction: Direction::Backward,
                limit: 1,
                filter: EventFilter::default(),
                until: None,
            })
            .await;
        match last {
            Ok(slice) => {
                let start = slice.events.first().map_or(0, |e| e.position.0 + 1);
                let generation = write(&shared.ring).start(start);
                let sub =
                    store.subscribe_all(SubscribeFrom::At(Position(start)), EventFilter::default());
                follow(&shared, generation, sub, &encoded, &metrics).await;
                write(&shared.ring).stop_run(generation);
                shared.wake_all();
            }
            Err(e) => tracing::warn!(error = %e, "the live hub cannot find the end of the log"),
        }
        tokio::time::sleep(RESTART_PAUSE).await;
    }
}

/// Pushes the subscription's events into the ring until it fails or the run is stopped.
async fn follow(
    shared: &Shared,
    generation: u64,
    mut sub: eventfold_core::EventSubscription,
    encoded: &EncodedEvents,
    metrics: &Metrics,
) {
    use futures::FutureExt as _;
    loop {
        let first = match sub.next().await {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the live hub's subscription failed; subscribers read from the store until it restarts");
                return;
            }
            None => return,
        };
        // Everything the subscription has ready now, in one batch of at most one chunk.
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut failed = false;
        let mut item = Some(first);
        while let Some(e) = item.take() {
            let line = encoded.line(&e);
            metrics.subscription_encodes.inc_by(u64::from(line.encoded));
            let live = Arc::new(LiveEvent {
                event: e,
                line: line.bytes,
            });
            bytes += live.data_bytes();
            batch.push(live);
            if batch.len() >= crate::CHUNK_EVENTS_MAX || bytes >= crate::CHUNK_DATA_BYTES_MAX {
                break;
            }
            match sub.next().now_or_never() {
                Some(Some(Ok(e))) => item = Some(e),
                Some(Some(Err(e))) => {
                    tracing::warn!(error = %e, "the live hub's subscription failed; subscribers read from the store until it restarts");
                    failed = true;
                }
                Some(None) => failed = true,
                None => {}
            }
        }
        if !write(&shared.ring).push(generation, &batch) {
            return;
        }
        metrics.subscription_hub_wakeups.inc_by(shared.wake(&batch));
        if failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold_core::{ContentType, EventId, EventType, Metadata, Revision, Timestamp};

    fn ev(stream: &str, position: u64, data_bytes: usize) -> Arc<LiveEvent> {
        let event = RecordedEvent {
            id: EventId::from_bytes(u128::from(position).to_be_bytes()),
            stream: stream.parse().expect("stream name"),
            event_type: "t".parse::<EventType>().expect("event type"),
            revision: Revision(position),
            position: Position(position),
            timestamp: Timestamp::now(),
            schema_version: 1,
            content_type: ContentType::json(),
            data: vec![b'1'; data_bytes],
            metadata: Metadata::new(),
            tags: eventfold_core::Tags::none(),
        };
        let line = crate::routes::encode::ndjson_line(&event);
        Arc::new(LiveEvent { event, line })
    }

    const ANY: TakeLimits = TakeLimits {
        events: usize::MAX,
        data_bytes: usize::MAX,
    };

    fn all() -> Interest {
        Interest::All(EventFilter::default())
    }

    fn positions(t: Take) -> Vec<u64> {
        match t {
            Take::Events(v) => v.iter().map(|e| e.event.position.0).collect(),
            Take::Behind => panic!("behind"),
        }
    }

    #[test]
    fn holds_nothing_until_started_and_refuses_a_stopped_run() {
        let mut ring = LiveRing::new(10, 1 << 20);
        let mut next = 0;
        assert!(matches!(ring.take(&mut next, &all(), ANY), Take::Behind));
        let g = ring.start(5);
        assert!(!ring.covers(4) && ring.covers(5) && ring.covers(100));
        assert!(ring.push(g, &[ev("a-1", 5, 1), ev("a-1", 8, 1)]));
        let mut next = 5;
        assert_eq!(positions(ring.take(&mut next, &all(), ANY)), [5, 8]);
        assert_eq!(next, 9);
        ring.stop();
        assert!(
            !ring.push(g, &[ev("a-1", 9, 1)]),
            "a stopped run may not push"
        );
        assert!(matches!(ring.take(&mut next, &all(), ANY), Take::Behind));
        let g2 = ring.start(20);
        assert!(!ring.push(g, &[ev("a-1", 20, 1)]), "nor an earlier run");
        assert!(ring.push(g2, &[ev("a-1", 20, 1)]));
        ring.stop_run(g);
        assert!(
            ring.covers(20),
            "a late stop of the earlier run leaves this one alone"
        );
        let mut next = 9;
        assert!(
            matches!(ring.take(&mut next, &all(), ANY), Take::Behind),
            "9..20 was never held by this run"
        );
    }

    #[test]
    fn a_cursor_moves_past_what_it_scanned_and_never_takes_an_event_twice() {
        let mut ring = LiveRing::new(100, 1 << 20);
        let g = ring.start(0);
        assert!(
            ring.push(
                g,
                &(0..10)
                    .map(|p| ev(if p % 2 == 0 { "a-1" } else { "b-1" }, p, 1))
                    .collect::<Vec<_>>()
            )
        );
        let b = Interest::Stream("b-1".parse().expect("name"));
        let mut next = 4;
        assert_eq!(positions(ring.take(&mut next, &b, ANY)), [5, 7, 9]);
        assert_eq!(next, 10);
        assert_eq!(positions(ring.take(&mut next, &b, ANY)), Vec::<u64>::new());
        // A cursor ahead of the ring (it read further from the store) stays where it is.
        let mut ahead = 12;
        assert_eq!(
            positions(ring.take(&mut ahead, &all(), ANY)),
            Vec::<u64>::new()
        );
        assert_eq!(ahead, 12);
        assert!(ring.push(g, &[ev("a-1", 10, 1), ev("a-1", 12, 1), ev("b-1", 13, 1)]));
        assert_eq!(positions(ring.take(&mut ahead, &all(), ANY)), [12, 13]);
        assert_eq!(positions(ring.take(&mut next, &b, ANY)), [13]);
        // A filter on `$all`.
        let f = Interest::All(EventFilter {
            stream_prefix: Some("a-".into()),
            ..EventFilter::default()
        });
        let mut from0 = 0;
        assert_eq!(
            positions(ring.take(&mut from0, &f, ANY)),
            [0, 2, 4, 6, 8, 10, 12]
        );
    }

    #[test]
    fn takes_are_bounded_like_chunks_and_resume_where_they_stopped() {
        let mut ring = LiveRing::new(100, 1 << 20);
        let g = ring.start(0);
        assert!(ring.push(g, &(0..10).map(|p| ev("a-1", p, 100)).collect::<Vec<_>>()));
        let mut next = 0;
        let three = TakeLimits {
            events: 3,
            data_bytes: usize::MAX,
        };
        assert_eq!(positions(ring.take(&mut next, &all(), three)), [0, 1, 2]);
        assert_eq!(next, 3);
        // The byte bound closes a take at the first event that reaches it.
        let bytes = TakeLimits {
            events: 100,
            data_bytes: 250,
        };
        assert_eq!(positions(ring.take(&mut next, &all(), bytes)), [3, 4, 5]);
        assert_eq!(positions(ring.take(&mut next, &all(), ANY)), [6, 7, 8, 9]);
    }

    #[test]
    fn eviction_moves_the_start_and_a_cursor_behind_it_must_read_the_store() {
        let mut ring = LiveRing::new(4, 1 << 20);
        let g = ring.start(0);
        assert!(ring.push(g, &(0..3).map(|p| ev("a-1", p, 1)).collect::<Vec<_>>()));
        let mut slow = 1;
        let mut fast = 3;
        assert!(ring.push(g, &(3..7).map(|p| ev("a-1", p, 1)).collect::<Vec<_>>()));
        assert_eq!(ring.from(), 3, "0, 1 and 2 were evicted");
        assert!(matches!(ring.take(&mut slow, &all(), ANY), Take::Behind));
        assert_eq!(slow, 1, "a cursor behind the ring does not move");
        assert_eq!(positions(ring.take(&mut fast, &all(), ANY)), [3, 4, 5, 6]);
        // The byte bound evicts too.
        let mut small = LiveRing::new(100, 3 * ev("a-1", 0, 100).weight());
        let g = small.start(0);
        assert!(small.push(g, &(0..5).map(|p| ev("a-1", p, 100)).collect::<Vec<_>>()));
        assert_eq!(small.from(), 2);
        let mut n = 2;
        assert_eq!(positions(small.take(&mut n, &all(), ANY)), [2, 3, 4]);
    }

    /// Whether the waiter holds a wake-up (taking it).
    fn woken(w: &Waiter) -> bool {
        use futures::FutureExt as _;
        w.woken().now_or_never().is_some()
    }

    #[test]
    fn a_push_wakes_only_the_subscriptions_that_want_one_of_its_events() {
        let hub = Hub::new(100, 1 << 20);
        let a = hub.waiter(&Interest::Stream("a-1".parse().expect("name")));
        let a2 = hub.waiter(&Interest::Stream("a-1".parse().expect("name")));
        let b = hub.waiter(&Interest::Stream("b-1".parse().expect("name")));
        let everything = hub.waiter(&all());
        let only_c = hub.waiter(&Interest::All(EventFilter {
            stream_prefix: Some("c-".into()),
            ..EventFilter::default()
        }));
        // Two events of a-1 in one push: each of its waiters is woken once.
        assert_eq!(hub.shared.wake(&[ev("a-1", 0, 1), ev("a-1", 1, 1)]), 3);
        assert!(woken(&a) && woken(&a2) && woken(&everything));
        assert!(!woken(&b) && !woken(&only_c));
        assert!(!woken(&a), "one wake-up per push, taken once");
        // A wake-up given while nobody waits is kept until the next wait.
        assert_eq!(hub.shared.wake(&[ev("b-1", 2, 1), ev("c-9", 3, 1)]), 3);
        assert!(woken(&b) && woken(&only_c) && woken(&everything));
        assert!(!woken(&a) && !woken(&a2));
        // A dropped waiter is no longer woken (nor counted); a stop wakes everyone.
        drop(a2);
        assert_eq!(hub.shared.wake(&[ev("a-1", 4, 1)]), 2);
        assert!(woken(&a) && woken(&everything));
        hub.shared.wake_all();
        assert!(woken(&a) && woken(&b) && woken(&everything) && woken(&only_c));
        drop((a, b, everything, only_c));
        let w = lock(&hub.shared.waiters);
        assert!(
            w.streams.is_empty() && w.all.is_empty(),
            "nothing left behind"
        );
    }

    #[test]
    fn an_out_of_order_push_stops_the_run_instead_of_skipping() {
        let mut ring = LiveRing::new(10, 1 << 20);
        let g = ring.start(0);
        assert!(ring.push(g, &[ev("a-1", 3, 1)]));
        assert!(!ring.push(g, &[ev("a-1", 2, 1)]));
        let mut next = 0;
        assert!(matches!(ring.take(&mut next, &all(), ANY), Take::Behind));
    }
}
