//! Idempotency by event id: which appends are retries of an earlier one, and the bounded window
//! of recent ids every store keeps to tell.
//!
//! The contract (see [`crate::EventStore::append`] and `docs/http-api.md`, "Idempotency"): an
//! append whose event ids are exactly those of one earlier append to the same stream (same ids,
//! same order, same count) is answered with that append's result and `idempotent_replay`, and
//! writes nothing, as long as that append is inside the store's [`IdempotencyWindow`]; an append
//! that shares some ids with the window but is not such a repeat (a part of an earlier batch,
//! ids of two batches, ids appended to another stream, an id twice in one batch) is refused with
//! [`crate::StoreError::DuplicateEventId`]. Beyond the window only the stream's most recent
//! batch is still recognized (the rule every store kept before the window).
//!
//! [`judge_ids`] is that rule as a pure function over a lookup of each id; [`SeenIds`] is the
//! window in memory (the engine and the memory store), with memory bounded by the window.
//! PostgreSQL looks the ids up in its events table instead.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ValidationError;
use crate::head::LastAppend;
use crate::ids::EventId;
use crate::limits::{
    IDEMPOTENCY_WINDOW_AGE_DEFAULT, IDEMPOTENCY_WINDOW_EVENTS_DEFAULT,
    IDEMPOTENCY_WINDOW_EVENTS_MAX,
};

/// How far back a store recognizes event ids: the appends whose events all lie within the log's
/// newest `events` positions and were committed less than `max_age` ago (when set). Every event
/// takes one position of the log, and so does each metadata change and delete, so the window
/// holds at most `events` ids. `events == 0` turns the window off (only a stream's most recent
/// batch is recognized).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotencyWindow {
    /// How many of the log's newest positions the window spans (0: off). At most
    /// [`IDEMPOTENCY_WINDOW_EVENTS_MAX`].
    pub events: u64,
    /// Appends committed longer ago than this leave the window; `None`: no age bound.
    pub max_age: Option<Duration>,
}

impl Default for IdempotencyWindow {
    fn default() -> Self {
        IdempotencyWindow::DEFAULT
    }
}

impl IdempotencyWindow {
    /// The default: the newest [`IDEMPOTENCY_WINDOW_EVENTS_DEFAULT`] positions, younger than
    /// [`IDEMPOTENCY_WINDOW_AGE_DEFAULT`].
    pub const DEFAULT: IdempotencyWindow = IdempotencyWindow {
        events: IDEMPOTENCY_WINDOW_EVENTS_DEFAULT,
        max_age: Some(IDEMPOTENCY_WINDOW_AGE_DEFAULT),
    };

    /// No window: only a stream's most recent batch is recognized as a retry.
    pub const OFF: IdempotencyWindow = IdempotencyWindow {
        events: 0,
        max_age: None,
    };

    /// A window of `events` positions and `max_age`, checked: `events` at most
    /// [`IDEMPOTENCY_WINDOW_EVENTS_MAX`], `max_age` not zero.
    pub fn new(events: u64, max_age: Option<Duration>) -> Result<Self, ValidationError> {
        let w = IdempotencyWindow { events, max_age };
        w.check()?;
        Ok(w)
    }

    /// Whether the values are allowed (see [`IdempotencyWindow::new`]).
    pub fn check(&self) -> Result<(), ValidationError> {
        if self.events > IDEMPOTENCY_WINDOW_EVENTS_MAX {
            return Err(ValidationError::new(
                "idempotency window",
                &self.events.to_string(),
                format!(
                    "is more than {IDEMPOTENCY_WINDOW_EVENTS_MAX} events; the window is held in memory (about 33 bytes per event, 85 for single-event appends): choose a smaller one"
                ),
            ));
        }
        if self.max_age.is_some_and(|a| a.is_zero()) {
            return Err(ValidationError::new(
                "idempotency window",
                "0s",
                "is an age of zero, which would recognize no retry; give a positive age, or leave the age out for no age bound",
            ));
        }
        Ok(())
    }

    /// Whether the window is on.
    pub fn is_on(&self) -> bool {
        self.events > 0
    }

    /// The oldest position a batch may start at to be inside the window, when the log's next
    /// position is `next_position`.
    pub fn oldest_position(&self, next_position: u64) -> u64 {
        next_position.saturating_sub(self.events)
    }

    /// The oldest commit time (microseconds) inside the window at `now_us`, if there is an age
    /// bound.
    pub fn oldest_timestamp_us(&self, now_us: i64) -> Option<i64> {
        self.max_age.map(|a| {
            let us = i64::try_from(a.as_micros()).unwrap_or(i64::MAX);
            now_us.saturating_sub(us)
        })
    }

    /// Whether a batch whose first event is at `first_position`, committed at `timestamp_us`,
    /// is inside the window of a log whose next position is `next_position`, at `now_us`.
    pub fn holds(
        &self,
        first_position: u64,
        timestamp_us: i64,
        next_position: u64,
        now_us: i64,
    ) -> bool {
        self.is_on()
            && first_position >= self.oldest_position(next_position)
            && self
                .oldest_timestamp_us(now_us)
                .is_none_or(|oldest| timestamp_us >= oldest)
    }
}

/// Where an event id was seen inside the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenAt {
    /// Whether it was appended to the stream now appended to.
    pub same_stream: bool,
    /// The append it was part of and its index in that append's batch; `None` when the store
    /// does not know the batch (PostgreSQL rows written before the batch was recorded).
    pub batch: Option<(LastAppend, u64)>,
}

/// What the ids of an append say, before anything else is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdVerdict {
    /// No id is in the window.
    New,
    /// The ids are exactly those of this earlier append to the same stream: answer it again.
    Replay(LastAppend),
    /// This id is in the window (or twice in the batch), and the append is not a repeat of one
    /// earlier append: refuse it.
    Duplicate(EventId),
}

impl IdVerdict {
    /// The verdict for an import (`EventStore::append_imported`): it carries history as it
    /// was, ids seen before included, so only a whole repeat of an earlier append is a retry;
    /// a [`IdVerdict::Duplicate`] is written as new.
    pub fn for_import(self) -> IdVerdict {
        match self {
            IdVerdict::Duplicate(_) => IdVerdict::New,
            v => v,
        }
    }
}

/// Judges an append's `ids` (in batch order) against the window, as `lookup` answers for each
/// id: a repeat of one earlier append to the same stream (the same ids at the same indexes of
/// a batch of the same length) is a [`IdVerdict::Replay`]; an id given twice in the batch, or
/// any id seen otherwise, a [`IdVerdict::Duplicate`]; else [`IdVerdict::New`].
pub fn judge_ids<I>(ids: I, mut lookup: impl FnMut(&EventId) -> Option<SeenAt>) -> IdVerdict
where
    I: ExactSizeIterator<Item = EventId> + Clone,
{
    if let Some(id) = repeated(ids.clone()) {
        return IdVerdict::Duplicate(id);
    }
    judge_distinct(ids, |_, id| lookup(id))
}

/// [`judge_ids`] for `ids` known to hold no id twice; `lookup` is given each id's index too.
fn judge_distinct<I>(ids: I, mut lookup: impl FnMut(usize, &EventId) -> Option<SeenAt>) -> IdVerdict
where
    I: ExactSizeIterator<Item = EventId>,
{
    let n = ids.len() as u64;
    let mut first_seen = None;
    let mut replay: Option<LastAppend> = None;
    let mut exact = true;
    for (i, id) in ids.enumerate() {
        let Some(at) = lookup(i, &id) else {
            exact = false;
            continue;
        };
        first_seen.get_or_insert(id);
        match at.batch {
            Some((b, index))
                if at.same_stream
                    && index == i as u64
                    && b.len == n
                    && replay.is_none_or(|r| r == b) =>
            {
                replay = Some(b);
            }
            _ => exact = false,
        }
    }
    match (first_seen, replay) {
        (None, _) => IdVerdict::New,
        (Some(_), Some(b)) if exact => IdVerdict::Replay(b),
        (Some(id), _) => IdVerdict::Duplicate(id),
    }
}

/// Batches up to this many events are checked for a repeated id pair by pair; larger ones
/// through a hash set.
const PAIRWISE_MAX: usize = 16;

/// The first id that appears twice in `ids`, if any.
fn repeated<I: ExactSizeIterator<Item = EventId> + Clone>(ids: I) -> Option<EventId> {
    let n = ids.len();
    if n < 2 {
        return None;
    }
    if n <= PAIRWISE_MAX {
        for (i, a) in ids.clone().enumerate() {
            if ids.clone().skip(i + 1).any(|b| b == a) {
                return Some(a);
            }
        }
        return None;
    }
    let mut seen = std::collections::HashSet::with_capacity(n);
    ids.into_iter().find(|&id| !seen.insert(id))
}

/// One append inside a [`SeenIds`] window.
#[derive(Clone, Copy, Debug)]
struct Batch {
    /// The sequence number of its first id (see [`SeenIds`]).
    first_seq: u64,
    first_position: u64,
    first_revision: u64,
    timestamp_us: i64,
    len: u32,
    /// Its stream's slot in [`SeenIds::streams`].
    stream: u32,
}

/// A stream with batches in the window.
#[derive(Clone, Debug)]
struct StreamSlot {
    name: Option<Arc<str>>,
    /// Batches of the window in this stream.
    batches: u32,
}

/// Tables the id index is split into. A table grows by rehashing every id it holds at once:
/// one table of the whole window stopped the writer for about 23 ms at half a million ids and
/// 31-56 ms at 918 thousand (while a new store filled its first window; `BENCHMARKS.md`, "Issue
/// 12, 2026-12-06 (fourth session)"). Each of 256 tables grows on its own at 1/256 of the ids.
const TABLE_SHARDS: usize = 256;

/// The table of [`SeenIds::tables`] holding the id whose hash is `hash`: bits 40-47, which
/// neither the bucket index (the low bits) nor the control byte (the top 7) of a table of
/// fewer than 2^40 slots uses, so the ids of one table still spread over all of its slots.
fn shard_of(hash: u64) -> usize {
    (hash >> 40) as usize % TABLE_SHARDS
}

/// An entry of the id tables: where the id is in the ring, as the low 32 bits of its sequence
/// number (sequence numbers count every id ever recorded; the window holds fewer than 2^32 of
/// them, so the low bits name one id of the ring), and the low 32 bits of its hash, from which
/// the table files it ([`table_hash`]) without reading the ring.
#[derive(Clone, Copy, Debug)]
struct Entry {
    seq: u32,
    hash: u32,
}

/// The hash a table files an [`Entry`] under: its 32 bits of the id's hash in both halves, so
/// that the bucket index (the low bits, fewer than 25 in a table of the largest window) and the
/// control byte (the top 7) are independent bits of the id's hash, and neither is the bits
/// [`shard_of`] took.
fn table_hash(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

/// The idempotency window in memory, for a store that decides appends one at a time (the
/// engine's writer, the memory store's lock): the ids of the appends inside an
/// [`IdempotencyWindow`], oldest first, and a hash table (split in [`TABLE_SHARDS`]) from id
/// to its place.
///
/// An id leaving the window leaves the ring only: its table entry stays, no longer naming an
/// id of the ring (so no lookup finds it), until its table is full, when the table drops every
/// such entry at once before it would grow. Removing each entry as its id left cost a cache miss
/// per id in a table of a million (`BENCHMARKS.md`, "Issue 12, 2026-12-06 (sixth session)").
/// Whatever entry a lookup meets, it takes it only if the ring holds that very id at the place
/// the entry names, so an entry left behind can at worst name another occurrence of its id.
///
/// Memory is bounded by the window: 16 bytes per id (a ring of the ids in log order), 9 bytes
/// per slot of the hash tables (an [`Entry`] and a control byte; with the entries of ids that
/// left, 22-88 % of the slots hold an id of the window), 40 bytes per append (its stream, first
/// position and revision, commit time, length), and per stream with appends in the window its
/// name once (shared with the caller's `StreamName`) and ~40 bytes; the rings grow by doubling.
/// Measured (bench row (i)): 33 bytes per id for batches of 1,000, 84 after 200,000
/// single-event appends (`BENCHMARKS.md`, "Issue 12, 2026-12-06 (sixth session)").
/// Appends leave the window oldest first as the log moves on ([`SeenIds::record`]) and as they
/// age; an append that does not fit the window at all is not recorded.
#[derive(Debug)]
pub struct SeenIds {
    window: IdempotencyWindow,
    hasher: std::hash::RandomState,
    /// Where each id of the ring is, in [`TABLE_SHARDS`] tables chosen by [`shard_of`] the id's
    /// hash; with entries of ids that left (see above).
    tables: Box<[hashbrown::HashTable<Entry>]>,
    /// The ids in the window, oldest first; `ids[0]` has sequence number `base`.
    ids: VecDeque<EventId>,
    base: u64,
    /// The appends in the window, oldest first.
    batches: VecDeque<Batch>,
    streams: HashMap<Arc<str>, u32>,
    slots: Vec<StreamSlot>,
    free_slots: Vec<u32>,
    /// The ids of the last [`SeenIds::judge`] with their hashes, for the [`SeenIds::record`]
    /// of the same append to use (each id is hashed once; a record of other ids hashes them).
    judged: Vec<(EventId, u64)>,
    /// Scratch for finding an id given twice in a batch: indexes into `judged`.
    twice: hashbrown::HashTable<u32>,
}

/// The scratch of [`SeenIds::judge`] keeps at most this many ids' room between appends.
const JUDGED_KEEP: usize = 4_096;

impl SeenIds {
    /// An empty window.
    pub fn new(window: IdempotencyWindow) -> Self {
        SeenIds {
            window,
            hasher: std::hash::RandomState::new(),
            tables: (0..TABLE_SHARDS)
                .map(|_| hashbrown::HashTable::new())
                .collect(),
            ids: VecDeque::new(),
            base: 0,
            batches: VecDeque::new(),
            streams: HashMap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            judged: Vec::new(),
            twice: hashbrown::HashTable::new(),
        }
    }

    /// The window it keeps.
    pub fn window(&self) -> IdempotencyWindow {
        self.window
    }

    /// Ids held (including any that left the window and are not evicted yet).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it holds no id.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Appends held.
    pub fn batches(&self) -> usize {
        self.batches.len()
    }

    /// Bytes of heap it holds (capacities, not lengths; stream names not counted: they are
    /// shared with the stores' own).
    pub fn heap_bytes(&self) -> usize {
        self.tables.iter().map(|t| t.capacity()).sum::<usize>() * (std::mem::size_of::<Entry>() + 1)
            + self.ids.capacity() * std::mem::size_of::<EventId>()
            + self.batches.capacity() * std::mem::size_of::<Batch>()
            + self.streams.capacity() * (std::mem::size_of::<(Arc<str>, u32)>() + 1)
            + self.slots.capacity() * std::mem::size_of::<StreamSlot>()
            + self.free_slots.capacity() * std::mem::size_of::<u32>()
            + self.judged.capacity() * std::mem::size_of::<(EventId, u64)>()
            + self.twice.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    /// Judges an append of `ids` to `stream` (see [`judge_ids`]) when the log's next position
    /// is `next_position`, at `now_us`. Always [`IdVerdict::New`] when the window is off. Keeps
    /// the ids' hashes for the [`SeenIds::record`] of this append.
    pub fn judge<I>(&mut self, stream: &str, ids: I, next_position: u64, now_us: i64) -> IdVerdict
    where
        I: ExactSizeIterator<Item = EventId>,
    {
        self.judged.clear();
        if !self.window.is_on() {
            return IdVerdict::New;
        }
        let hasher = &self.hasher;
        self.judged
            .extend(ids.map(|id| (id, Self::hash_of(hasher, &id))));
        if let Some(id) = self.judged_twice() {
            return IdVerdict::Duplicate(id);
        }
        let this = &*self;
        let slot = this.streams.get(stream).copied();
        judge_distinct(this.judged.iter().map(|&(id, _)| id), |i, id| {
            let seq = this.seq_of(id, this.judged[i].1)?;
            this.lookup(slot, seq, next_position, now_us)
        })
    }

    /// The first id of the last judged batch that it holds twice, if any (see [`repeated`]).
    fn judged_twice(&mut self) -> Option<EventId> {
        let SeenIds { judged, twice, .. } = self;
        if judged.len() <= PAIRWISE_MAX {
            return repeated(judged.iter().map(|&(id, _)| id));
        }
        twice.clear();
        twice.reserve(judged.len(), |&j| judged[j as usize].1);
        for (i, &(id, hash)) in judged.iter().enumerate() {
            if twice.find(hash, |&j| judged[j as usize].0 == id).is_some() {
                return Some(id);
            }
            twice.insert_unique(hash, i as u32, |&j| judged[j as usize].1);
        }
        None
    }

    /// Where the id of sequence number `seq` was seen, if inside the window.
    fn lookup(
        &self,
        stream_slot: Option<u32>,
        seq: u64,
        next_position: u64,
        now_us: i64,
    ) -> Option<SeenAt> {
        let b = self.batch_of(seq)?;
        if !self
            .window
            .holds(b.first_position, b.timestamp_us, next_position, now_us)
        {
            return None;
        }
        let len = u64::from(b.len);
        Some(SeenAt {
            same_stream: stream_slot == Some(b.stream),
            batch: Some((
                LastAppend {
                    first_revision: b.first_revision,
                    len,
                    first_position: b.first_position,
                    last_position: b.first_position + len - 1,
                },
                seq - b.first_seq,
            )),
        })
    }

    /// The table's hash of `id`: SipHash (the ids are the client's choice, so the table keeps
    /// std's keyed, flood-resistant hasher) of the 16 bytes as one `u128`, without the length
    /// prefix a byte slice would add (one compression round fewer per id).
    fn hash_of(hasher: &std::hash::RandomState, id: &EventId) -> u64 {
        hasher.hash_one(u128::from_le_bytes(*id.as_bytes()))
    }

    /// The place in the ring of the id of sequence number `seq` (low 32 bits); at or past the
    /// ring's end for an id that left.
    fn index_of(base: u64, seq: u32) -> usize {
        seq.wrapping_sub(base as u32) as usize
    }

    /// The sequence number of `id`'s newest occurrence, if it is held; `hash` is its
    /// [`SeenIds::hash_of`].
    fn seq_of(&self, id: &EventId, hash: u64) -> Option<u64> {
        let h = hash as u32;
        let e = self.tables[shard_of(hash)].find(table_hash(h), |e| {
            e.hash == h && self.ids.get(Self::index_of(self.base, e.seq)) == Some(id)
        })?;
        Some(self.base + Self::index_of(self.base, e.seq) as u64)
    }

    /// Whether the window holds `stream`'s append whose first event is at `first_position`,
    /// when the log's next position is `next_position`, at `now_us`. Every id of an append the
    /// window holds is in it, so an append [`SeenIds::judge`]d [`IdVerdict::New`] (none of its
    /// ids in the window) is no repeat of such an append: a store can tell without reading it.
    pub fn holds_append(
        &self,
        stream: &str,
        first_position: u64,
        next_position: u64,
        now_us: i64,
    ) -> bool {
        let Some(&slot) = self.streams.get(stream) else {
            return false;
        };
        // Appends are recorded in log order.
        let i = self
            .batches
            .partition_point(|b| b.first_position < first_position);
        self.batches.get(i).is_some_and(|b| {
            b.first_position == first_position
                && b.stream == slot
                && self
                    .window
                    .holds(b.first_position, b.timestamp_us, next_position, now_us)
        })
    }

    /// The batch holding the id of sequence number `seq`.
    fn batch_of(&self, seq: u64) -> Option<&Batch> {
        let i = self.batches.partition_point(|b| b.first_seq <= seq);
        self.batches.get(i.checked_sub(1)?)
    }

    /// Records an append of `ids` (in batch order) to `stream`, written as `batch` at
    /// `timestamp_us`, then lets out what left the window now that the log's next position is
    /// `next_position` (the position after the batch), at `now_us`. An append larger than the
    /// window, or already too old (an import's), is not recorded. Nothing when the window is off.
    pub fn record(
        &mut self,
        stream: &Arc<str>,
        ids: impl Iterator<Item = EventId>,
        batch: LastAppend,
        timestamp_us: i64,
        next_position: u64,
        now_us: i64,
    ) {
        if !self.window.is_on() {
            return;
        }
        self.evict(next_position, now_us);
        let Ok(len) = u32::try_from(batch.len) else {
            return;
        };
        if len == 0
            || !self
                .window
                .holds(batch.first_position, timestamp_us, next_position, now_us)
        {
            return;
        }
        let stream_slot = self.stream_slot(stream);
        let first_seq = self.base + self.ids.len() as u64;
        let mut pushed = 0u32;
        for (k, id) in ids.take(len as usize).enumerate() {
            let seq = self.base + self.ids.len() as u64;
            let hash = match self.judged.get(k) {
                Some(&(judged, hash)) if judged == id => hash,
                _ => Self::hash_of(&self.hasher, &id),
            };
            self.ids.push_back(id);
            pushed += 1;
            let SeenIds {
                tables, ids, base, ..
            } = self;
            let table = &mut tables[shard_of(hash)];
            if table.len() == table.capacity() {
                // Full: drop the entries of ids that left before growing.
                table.retain(|e| Self::index_of(*base, e.seq) < ids.len());
            }
            let h = hash as u32;
            let entry = table.entry(
                table_hash(h),
                |e| e.hash == h && ids.get(Self::index_of(*base, e.seq)) == Some(&id),
                |e| table_hash(e.hash),
            );
            match entry {
                // An id held already (an import may carry one twice): its newest occurrence wins.
                hashbrown::hash_table::Entry::Occupied(mut held) => held.get_mut().seq = seq as u32,
                hashbrown::hash_table::Entry::Vacant(room) => {
                    room.insert(Entry {
                        seq: seq as u32,
                        hash: h,
                    });
                }
            }
        }
        self.judged.clear();
        if self.judged.capacity() > JUDGED_KEEP {
            self.judged.shrink_to(JUDGED_KEEP);
            self.twice.clear();
            self.twice.shrink_to(JUDGED_KEEP, |_| 0);
        }
        self.batches.push_back(Batch {
            first_seq,
            first_position: batch.first_position,
            first_revision: batch.first_revision,
            timestamp_us,
            len: pushed,
            stream: stream_slot,
        });
    }

    /// Lets out, oldest first, the appends outside the window when the log's next position is
    /// `next_position`, at `now_us`.
    pub fn evict(&mut self, next_position: u64, now_us: i64) {
        while let Some(b) = self.batches.front().copied() {
            if self
                .window
                .holds(b.first_position, b.timestamp_us, next_position, now_us)
            {
                break;
            }
            self.batches.pop_front();
            // The ids leave the ring; their entries stay until their tables fill (see above).
            let n = (b.len as usize).min(self.ids.len());
            self.ids.drain(..n);
            self.base += n as u64;
            self.release_stream(b.stream);
        }
        if self.batches.is_empty() {
            // Give memory back after a burst, once the window emptied.
            self.ids.shrink_to_fit();
            self.batches.shrink_to_fit();
            for t in self.tables.iter_mut() {
                t.clear();
                t.shrink_to_fit(|e| table_hash(e.hash));
            }
        }
    }

    fn stream_slot(&mut self, stream: &Arc<str>) -> u32 {
        if let Some(&slot) = self.streams.get(&**stream) {
            self.slots[slot as usize].batches += 1;
            return slot;
        }
        let entry = StreamSlot {
            name: Some(stream.clone()),
            batches: 1,
        };
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s as usize] = entry;
                s
            }
            None => {
                self.slots.push(entry);
                (self.slots.len() - 1) as u32
            }
        };
        self.streams.insert(stream.clone(), slot);
        slot
    }

    fn release_stream(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        s.batches = s.batches.saturating_sub(1);
        if s.batches == 0 {
            if let Some(name) = s.name.take() {
                self.streams.remove(&*name);
            }
            self.free_slots.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u128, from: u128) -> Vec<EventId> {
        (from..from + n)
            .map(|i| EventId::from_uuid(uuid::Uuid::from_u128(i)))
            .collect()
    }

    fn batch(first_revision: u64, len: u64, first_position: u64) -> LastAppend {
        LastAppend {
            first_revision,
            len,
            first_position,
            last_position: first_position + len - 1,
        }
    }

    fn window(events: u64, max_age_s: Option<u64>) -> IdempotencyWindow {
        IdempotencyWindow::new(events, max_age_s.map(Duration::from_secs)).expect("valid")
    }

    const NOW: i64 = 1_000_000_000_000;

    /// Entries of the id tables that name an id of the ring.
    fn entries_of_the_window(seen: &SeenIds) -> usize {
        seen.tables
            .iter()
            .flat_map(|t| t.iter())
            .filter(|e| SeenIds::index_of(seen.base, e.seq) < seen.ids.len())
            .count()
    }

    fn judge(seen: &mut SeenIds, stream: &str, ids: &[EventId], next: u64) -> IdVerdict {
        seen.judge(stream, ids.iter().copied(), next, NOW)
    }

    #[test]
    fn a_repeat_of_any_batch_in_the_window_replays_and_overlaps_are_duplicates() {
        let mut seen = SeenIds::new(window(100, None));
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let one = ids(3, 10);
        let two = ids(2, 20);
        let other = ids(1, 30);
        seen.record(&a, one.iter().copied(), batch(0, 3, 0), NOW, 3, NOW);
        seen.record(&a, two.iter().copied(), batch(3, 2, 3), NOW, 5, NOW);
        seen.record(&b, other.iter().copied(), batch(0, 1, 5), NOW, 6, NOW);
        assert_eq!(seen.len(), 6);
        assert_eq!(seen.batches(), 3);
        let dup = |id: EventId| IdVerdict::Duplicate(id);
        let cases: Vec<(&str, Vec<EventId>, IdVerdict)> = vec![
            ("a", one.clone(), IdVerdict::Replay(batch(0, 3, 0))),
            ("a", two.clone(), IdVerdict::Replay(batch(3, 2, 3))),
            ("b", other.clone(), IdVerdict::Replay(batch(0, 1, 5))),
            ("a", ids(2, 40), IdVerdict::New),
            // Another stream, a part, a reordering, a superset, ids of two batches.
            ("b", one.clone(), dup(one[0])),
            ("a", one[..2].to_vec(), dup(one[0])),
            ("a", one[1..].to_vec(), dup(one[1])),
            ("a", vec![one[1], one[0], one[2]], dup(one[1])),
            ("a", [one.clone(), ids(1, 50)].concat(), dup(one[0])),
            ("a", [ids(1, 50), one.clone()].concat(), dup(one[0])),
            ("a", vec![one[2], two[0]], dup(one[2])),
            ("a", vec![two[0], two[1], other[0]], dup(two[0])),
            // An id twice in one batch, seen or not.
            ("a", vec![ids(1, 60)[0], ids(1, 60)[0]], dup(ids(1, 60)[0])),
            ("a", [ids(20, 70), ids(1, 75)].concat(), dup(ids(1, 75)[0])),
        ];
        for (stream, batch_ids, want) in cases {
            assert_eq!(
                judge(&mut seen, stream, &batch_ids, 6),
                want,
                "{stream} {batch_ids:?}"
            );
        }
    }

    #[test]
    fn the_window_says_which_appends_it_holds_by_stream_position_and_age() {
        let mut seen = SeenIds::new(window(5, Some(10)));
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let old = NOW - 9_000_000;
        seen.record(&a, ids(2, 1).into_iter(), batch(0, 2, 0), old, 2, old);
        seen.record(&b, ids(1, 10).into_iter(), batch(0, 1, 2), NOW, 3, NOW);
        seen.record(&a, ids(1, 20).into_iter(), batch(2, 1, 3), NOW, 4, NOW);
        assert!(seen.holds_append("a", 0, 4, NOW));
        assert!(seen.holds_append("b", 2, 4, NOW));
        assert!(seen.holds_append("a", 3, 4, NOW));
        // Not an append's first position, another stream's append, a stream it never saw.
        assert!(!seen.holds_append("a", 1, 4, NOW));
        assert!(!seen.holds_append("a", 2, 4, NOW));
        assert!(!seen.holds_append("c", 3, 4, NOW));
        // Past the window by position (positions 1.. are inside at next position 6), by age.
        assert!(!seen.holds_append("a", 0, 6, NOW));
        assert!(!seen.holds_append("a", 0, 4, NOW + 2_000_000));
        assert!(seen.holds_append("a", 3, 4, NOW + 2_000_000));
        // A window that is off holds nothing.
        let off = SeenIds::new(IdempotencyWindow::OFF);
        assert!(!off.holds_append("a", 0, 4, NOW));
    }

    #[test]
    fn batches_leave_the_window_whole_by_position_and_by_age() {
        let mut seen = SeenIds::new(window(5, Some(10)));
        let s: Arc<str> = Arc::from("s");
        let first = ids(3, 1);
        let second = ids(2, 10);
        seen.record(&s, first.iter().copied(), batch(0, 3, 0), NOW, 3, NOW);
        // A metadata change took position 3; the second batch is at 4 and 5.
        seen.record(&s, second.iter().copied(), batch(3, 2, 4), NOW, 6, NOW);
        // Next position 6, window 5: positions 1.. are inside, so the first batch (at 0) left
        // whole, although two of its events are inside.
        assert_eq!(judge(&mut seen, "s", &first, 6), IdVerdict::New);
        assert_eq!(seen.len(), 2, "its ids were let out");
        assert_eq!(
            judge(&mut seen, "s", &second, 6),
            IdVerdict::Replay(batch(3, 2, 4))
        );
        // Once the log moves past it, without a record: the lookup says outside already.
        assert_eq!(judge(&mut seen, "s", &second, 10), IdVerdict::New);
        // By age: 10 s.
        let young = NOW - 9_000_000;
        let mut seen = SeenIds::new(window(100, Some(10)));
        seen.record(&s, first.iter().copied(), batch(0, 3, 0), young, 3, young);
        assert_eq!(
            seen.judge("s", first.iter().copied(), 3, NOW),
            IdVerdict::Replay(batch(0, 3, 0))
        );
        assert_eq!(
            seen.judge("s", first.iter().copied(), 3, NOW + 1_000_001),
            IdVerdict::New
        );
        seen.evict(3, NOW + 1_000_001);
        assert!(seen.is_empty());
        // An append already older than the window (an import's) is not recorded; one larger
        // than the window neither.
        seen.record(
            &s,
            second.iter().copied(),
            batch(3, 2, 3),
            NOW - 11_000_000,
            5,
            NOW,
        );
        assert!(seen.is_empty());
        let mut small = SeenIds::new(window(2, None));
        small.record(&s, first.iter().copied(), batch(0, 3, 0), NOW, 3, NOW);
        assert!(small.is_empty());
        assert_eq!(
            small.judge("s", first.iter().copied(), 3, NOW),
            IdVerdict::New
        );
    }

    #[test]
    fn an_id_held_twice_keeps_its_newest_occurrence_when_the_older_leaves() {
        let mut seen = SeenIds::new(window(4, None));
        let s: Arc<str> = Arc::from("s");
        let x = ids(1, 1);
        seen.record(&s, x.iter().copied(), batch(0, 1, 0), NOW, 1, NOW);
        seen.record(&s, x.iter().copied(), batch(1, 1, 1), NOW, 2, NOW);
        assert_eq!(
            judge(&mut seen, "s", &x, 2),
            IdVerdict::Replay(batch(1, 1, 1))
        );
        // Positions 0..4 pass; at next 5 the first occurrence (at 0) leaves.
        seen.evict(5, NOW);
        assert_eq!(seen.len(), 1);
        assert_eq!(
            judge(&mut seen, "s", &x, 5),
            IdVerdict::Replay(batch(1, 1, 1))
        );
        seen.evict(6, NOW);
        assert!(seen.is_empty());
        assert_eq!(judge(&mut seen, "s", &x, 6), IdVerdict::New);
    }

    #[test]
    fn memory_stays_bounded_by_the_window_over_many_appends() {
        let mut seen = SeenIds::new(window(1_000, None));
        let streams: Vec<Arc<str>> = (0..7).map(|i| Arc::from(format!("s-{i}"))).collect();
        let mut next = 0u64;
        let mut peak = 0;
        let mut appended = Vec::new();
        for i in 0..20_000u64 {
            let len = 1 + i % 3;
            let batch_ids = ids(u128::from(len), u128::from(next) << 8);
            let s = &streams[(i % 7) as usize];
            let b = batch(i, len, next);
            seen.record(s, batch_ids.iter().copied(), b, NOW, next + len, NOW);
            appended.push((s.clone(), batch_ids, b));
            next += len;
            assert!(seen.len() <= 1_000);
            peak = peak.max(seen.heap_bytes());
        }
        assert!(seen.len() >= 997, "{}", seen.len());
        assert!(peak < 1_000 * 100, "{peak} bytes for 1,000 ids");
        // Exactly the batches starting in the newest 1,000 positions replay.
        for (s, batch_ids, b) in appended.iter().rev().take(600) {
            let want = if b.first_position + 1_000 >= next {
                IdVerdict::Replay(*b)
            } else {
                IdVerdict::New
            };
            assert_eq!(judge(&mut seen, s, batch_ids, next), want, "{b:?}");
        }
        assert_eq!(seen.streams.len(), 7);
    }

    /// The id index grows one table of many at a time: ids spread evenly over the tables (a
    /// table grows by rehashing all it holds, and one table of the whole window stopped the
    /// writer for tens of milliseconds), and each is still found and let out from its own.
    #[test]
    fn the_ids_spread_over_the_tables_so_none_grows_with_the_whole_window() {
        let n = 200_000u64;
        let mut seen = SeenIds::new(window(n, None));
        let s: Arc<str> = Arc::from("s");
        for p in 0..n {
            let id = ids(1, u128::from(p) << 8);
            seen.record(&s, id.iter().copied(), batch(p, 1, p), NOW, p + 1, NOW);
        }
        let mean = n as usize / TABLE_SHARDS;
        let (least, most) = seen
            .tables
            .iter()
            .map(|t| t.len())
            .fold((usize::MAX, 0), |(lo, hi), l| (lo.min(l), hi.max(l)));
        assert!(
            least > mean / 2 && most < mean * 2,
            "{least}..{most} ids per table, {mean} on average"
        );
        for p in [0, 1, n / 2, n - 1] {
            let id = ids(1, u128::from(p) << 8);
            assert_eq!(
                judge(&mut seen, "s", &id, n),
                IdVerdict::Replay(batch(p, 1, p))
            );
        }
        // Half the window's positions later, the older half has left the ring (their entries
        // stay until their tables fill, and name no id).
        seen.evict(n + n / 2, NOW);
        assert_eq!(seen.len(), n as usize / 2);
        assert_eq!(entries_of_the_window(&seen), n as usize / 2);
        let gone = ids(1, 0);
        assert_eq!(judge(&mut seen, "s", &gone, n + n / 2), IdVerdict::New);
        // Two more windows of ids: the tables drop the entries of ids that left as they fill,
        // so they never hold much more than twice the window.
        for p in n + n / 2..3 * n {
            let id = ids(1, u128::from(p) << 8);
            seen.record(&s, id.iter().copied(), batch(p, 1, p), NOW, p + 1, NOW);
        }
        assert_eq!(entries_of_the_window(&seen), n as usize);
        let slots: usize = seen.tables.iter().map(|t| t.capacity()).sum();
        assert!(slots < 5 * n as usize / 2, "{slots} slots for {n} ids");
        for p in [2 * n - 1, 2 * n, 3 * n - 1] {
            let id = ids(1, u128::from(p) << 8);
            let want = if p >= 2 * n {
                IdVerdict::Replay(batch(p, 1, p))
            } else {
                IdVerdict::New
            };
            assert_eq!(judge(&mut seen, "s", &id, 3 * n), want, "{p}");
        }
    }

    /// `judge` keeps the ids' hashes for the `record` that follows; a record of other ids (or
    /// of the same ids in another order) must hash its own, or its ids would be filed where no
    /// lookup finds them.
    #[test]
    fn a_record_uses_the_judged_hashes_only_for_the_ids_judged() {
        let mut seen = SeenIds::new(window(1_000, None));
        let s: Arc<str> = Arc::from("s");
        let judged = ids(40, 100);
        assert_eq!(judge(&mut seen, "s", &judged, 0), IdVerdict::New);
        // Other ids, but the judged one at index 1: recorded under the right hashes.
        let other = vec![ids(1, 200)[0], judged[1], ids(1, 201)[0]];
        seen.record(&s, other.iter().copied(), batch(0, 3, 0), NOW, 3, NOW);
        assert_eq!(
            judge(&mut seen, "s", &other, 3),
            IdVerdict::Replay(batch(0, 3, 0))
        );
        for &id in &other {
            assert_eq!(judge(&mut seen, "s", &[id], 3), IdVerdict::Duplicate(id));
        }
        // A batch judged then recorded as judged; then the same ids reversed.
        assert_eq!(judge(&mut seen, "s", &judged[2..], 3), IdVerdict::New);
        seen.record(
            &s,
            judged[2..].iter().copied(),
            batch(3, 38, 3),
            NOW,
            41,
            NOW,
        );
        assert_eq!(
            judge(&mut seen, "s", &judged[2..], 41),
            IdVerdict::Replay(batch(3, 38, 3))
        );
        let reversed: Vec<EventId> = judged[2..].iter().rev().copied().collect();
        assert_eq!(
            judge(&mut seen, "s", &reversed, 41),
            IdVerdict::Duplicate(judged[39])
        );
        seen.record(
            &s,
            reversed.iter().copied(),
            batch(41, 38, 41),
            NOW,
            79,
            NOW,
        );
        assert_eq!(judge(&mut seen, "s", &[judged[0]], 79), IdVerdict::New);
        // A batch of more than `PAIRWISE_MAX` ids with one twice, found through the hashes.
        let mut twice = ids(30, 300);
        twice.push(twice[17]);
        assert_eq!(
            judge(&mut seen, "s", &twice, 79),
            IdVerdict::Duplicate(twice[17])
        );
    }

    #[test]
    fn an_off_window_records_and_judges_nothing() {
        let mut seen = SeenIds::new(IdempotencyWindow::OFF);
        let s: Arc<str> = Arc::from("s");
        let x = ids(2, 1);
        seen.record(&s, x.iter().copied(), batch(0, 2, 0), NOW, 2, NOW);
        assert!(seen.is_empty());
        assert_eq!(judge(&mut seen, "s", &x, 2), IdVerdict::New);
        assert_eq!(
            judge(&mut seen, "s", &[x[0], x[0]], 2),
            IdVerdict::New,
            "without a window nothing is refused"
        );
    }

    #[test]
    fn window_values_are_checked() {
        assert!(IdempotencyWindow::new(IDEMPOTENCY_WINDOW_EVENTS_MAX, None).is_ok());
        assert!(IdempotencyWindow::new(IDEMPOTENCY_WINDOW_EVENTS_MAX + 1, None).is_err());
        assert!(IdempotencyWindow::new(10, Some(Duration::ZERO)).is_err());
        assert!(IdempotencyWindow::DEFAULT.check().is_ok());
        let w = window(10, Some(2));
        assert_eq!(w.oldest_position(4), 0);
        assert_eq!(w.oldest_position(25), 15);
        assert_eq!(w.oldest_timestamp_us(NOW), Some(NOW - 2_000_000));
        assert!(w.holds(15, NOW - 2_000_000, 25, NOW));
        assert!(!w.holds(14, NOW, 25, NOW));
        assert!(!w.holds(15, NOW - 2_000_001, 25, NOW));
        assert!(!IdempotencyWindow::OFF.holds(0, NOW, 0, NOW));
    }
}
