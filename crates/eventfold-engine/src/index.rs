//! The indexes, derived from the log. In memory: each stream's state (O(1) per stream), the
//! sparse position → address map, the active segment's memtable and the list of runs (frozen
//! memtables and key tables of sealed segments). On disk: the key tables (`keytable.rs`), which
//! map stream → revision → address and category / event type → addresses. Addresses grow with
//! positions (the log is append-only).

use std::collections::BTreeMap;
use std::sync::Arc;

use eventfold_core::{LastAppend, StreamHead, StreamMetadata};

use crate::format::{FLAG_TX_END, Kind, NO_REVISION};
use crate::keytable::{Memtable, NS_STREAM, Query, Table, key};
use crate::snapshot::Snapshot;

/// One sparse entry per this many records: a position lookup scans at most this many records.
pub const SPARSE_EVERY: u64 = 64;

/// The stream's most recent append, for idempotent retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastBatch {
    pub first_revision: u64,
    pub len: u64,
    pub first_position: u64,
    pub last_position: u64,
    /// The id of its first event; `None` when not known (a stream whose last batch was
    /// loaded from an index checkpoint or snapshot of version 1, written before they kept it):
    /// then a same-length append is compared with the batch by reading it from the log.
    pub first_id: Option<[u8; 16]>,
}

impl LastBatch {
    /// The append as the contract's retry rule sees it (without the engine's id hint).
    pub fn append(&self) -> LastAppend {
        LastAppend {
            first_revision: self.first_revision,
            len: self.len,
            first_position: self.first_position,
            last_position: self.last_position,
        }
    }
}

/// What the index knows about one stream: O(1) memory whatever its length (the addresses of its
/// events are in the key tables and the memtable).
#[derive(Debug, Clone)]
pub struct StreamState {
    pub name: Arc<str>,
    /// The revision the next event gets.
    pub next_revision: u64,
    pub last_position: u64,
    /// Revisions below this were soft-deleted.
    pub deleted_before: u64,
    pub tombstoned: bool,
    pub metadata: StreamMetadata,
    pub last_batch: Option<LastBatch>,
}

impl StreamState {
    pub fn new(name: Arc<str>) -> Self {
        StreamState {
            name,
            next_revision: 0,
            last_position: 0,
            deleted_before: 0,
            tombstoned: false,
            metadata: StreamMetadata::default(),
            last_batch: None,
        }
    }

    /// The revision the next event gets.
    pub fn next_revision(&self) -> u64 {
        self.next_revision
    }

    /// Where the stream stands, for the contract's rules (existence, visibility, writes).
    pub fn head(&self) -> StreamHead {
        StreamHead {
            next_revision: self.next_revision(),
            deleted_before: self.deleted_before,
            tombstoned: self.tombstoned,
        }
    }
}

/// A record as the index needs it.
#[derive(Debug, Clone, Copy)]
pub struct Summary<'a> {
    pub kind: Kind,
    pub flags: u8,
    pub stream: &'a str,
    pub event_type: &'a str,
    pub position: u64,
    pub revision: u64,
    pub addr: u64,
    pub id: Option<[u8; 16]>,
}

/// Why the log does not add up (positions or revisions out of sequence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inconsistent(pub String);

/// A sealed segment's (or merged segments') entries: frozen in memory until its table is
/// written, then on disk.
#[derive(Debug, Clone)]
pub enum Run {
    Frozen { seg: u32, mem: Arc<Memtable> },
    Table(Arc<Table>),
}

impl Run {
    pub fn first_seg(&self) -> u32 {
        match self {
            Run::Frozen { seg, .. } => *seg,
            Run::Table(t) => t.first_seg,
        }
    }

    pub fn last_seg(&self) -> u32 {
        match self {
            Run::Frozen { seg, .. } => *seg,
            Run::Table(t) => t.last_seg,
        }
    }

    fn query(&self, q: &Query, out: &mut Vec<(u64, u64)>) -> std::io::Result<()> {
        match self {
            Run::Frozen { mem, .. } => {
                mem.query(q, out);
                Ok(())
            }
            Run::Table(t) => t.query(q, out),
        }
    }
}

/// A lookup prepared under the index lock and finished outside it: the memtable's hits and the
/// runs to ask (tables are read from disk).
#[derive(Debug)]
pub struct Lookup {
    query: Query,
    mem: Vec<(u64, u64)>,
    runs: Vec<Run>,
    /// The ordinals are addresses: runs outside the asked segments are skipped.
    ordinal_is_addr: bool,
}

impl Lookup {
    /// `(ordinal, address)` of the hits, in the query's order, at most its limit.
    pub fn run(self) -> std::io::Result<Vec<(u64, u64)>> {
        let q = self.query;
        let mut out = Vec::new();
        if q.reverse {
            out.extend(self.mem.iter().take(q.limit));
            for r in self.runs.iter().rev() {
                if out.len() >= q.limit {
                    break;
                }
                if self.ordinal_is_addr && u64::from(r.first_seg()) > q.hi >> 32 {
                    continue;
                }
                let rest = Query {
                    limit: q.limit - out.len(),
                    ..q
                };
                r.query(&rest, &mut out)?;
            }
        } else {
            for r in &self.runs {
                if out.len() >= q.limit {
                    break;
                }
                if self.ordinal_is_addr && u64::from(r.last_seg()) < q.lo >> 32 {
                    continue;
                }
                let rest = Query {
                    limit: q.limit - out.len(),
                    ..q
                };
                r.query(&rest, &mut out)?;
            }
            out.extend(self.mem.iter().take(q.limit - out.len().min(q.limit)));
        }
        out.truncate(q.limit);
        Ok(out)
    }
}

/// The indexes.
#[derive(Debug, Default)]
pub struct Index {
    names: BTreeMap<Arc<str>, u32>,
    streams: Vec<StreamState>,
    /// Every `SPARSE_EVERY`-th record and the first of each segment: (position, address).
    sparse: Vec<(u64, u64)>,
    /// The next position to assign; everything below is durable and visible.
    pub next_position: u64,
    /// Where the next record goes.
    pub end_addr: u64,
    /// Event records (not system records) in the log.
    pub events: u64,
    last_was_tx_end: bool,
    last_segment: Option<u32>,
    /// Set once a compacted segment (one a scavenge rewrote) was replayed: from there on a
    /// stream's revisions may skip forward (the scavenge removed the events between).
    gaps_ok: bool,
    /// While a compacted segment is replayed: one past the last position it spans. Its
    /// records lie below it, in order, with gaps.
    compacted_end: Option<u64>,
    /// Hash bits of keys (see [`crate::keytable::key`]).
    pub hash_bits: u32,
    /// Entries of the active segment.
    pub memtable: Memtable,
    /// Entries of the sealed segments, in segment order, covering each exactly once.
    runs: Vec<Run>,
}

impl Index {
    pub fn new(hash_bits: u32) -> Self {
        Index {
            last_was_tx_end: true,
            hash_bits,
            ..Index::default()
        }
    }

    /// The state a snapshot describes (the end of its sealed segment), without any run.
    pub fn from_snapshot(snap: Snapshot, hash_bits: u32) -> Self {
        let mut ix = Index::new(hash_bits);
        for (i, st) in snap.streams.into_iter().enumerate() {
            ix.names.insert(st.name.clone(), i as u32);
            ix.streams.push(st);
        }
        ix.sparse = snap.sparse;
        ix.next_position = snap.next_position;
        ix.events = snap.events;
        ix.last_segment = Some(snap.segment);
        ix
    }

    /// The stream states and sparse map as they stand, for a snapshot of sealed segment `seg`.
    pub fn snapshot(&self, seg: u32) -> Snapshot {
        Snapshot {
            segment: seg,
            next_position: self.next_position,
            events: self.events,
            streams: self.streams.clone(),
            sparse: self.sparse.clone(),
        }
    }

    pub fn stream_id(&self, name: &str) -> Option<u32> {
        self.names.get(name).copied()
    }

    pub fn stream(&self, name: &str) -> Option<&StreamState> {
        self.stream_id(name).map(|i| &self.streams[i as usize])
    }

    /// The id of `name`, creating its (empty) state if needed.
    pub fn stream_id_or_insert(&mut self, name: &str) -> u32 {
        if let Some(id) = self.names.get(name) {
            return *id;
        }
        let name: Arc<str> = Arc::from(name);
        let id = self.streams.len() as u32;
        self.names.insert(name.clone(), id);
        self.streams.push(StreamState::new(name));
        id
    }

    fn lookup(&self, query: Query, ordinal_is_addr: bool) -> Lookup {
        let mut mem = Vec::new();
        self.memtable.query(&query, &mut mem);
        Lookup {
            query,
            mem,
            runs: self.runs.clone(),
            ordinal_is_addr,
        }
    }

    /// The addresses of `stream`'s revisions `range` are among the hits (hash collisions may add
    /// records of other streams: the caller checks each record it reads).
    pub fn stream_lookup(&self, stream: &str, range: std::ops::Range<u64>) -> Lookup {
        self.lookup(
            Query {
                key: key(NS_STREAM, stream, self.hash_bits),
                lo: range.start,
                hi: range.end.saturating_sub(1),
                limit: if range.is_empty() { 0 } else { usize::MAX },
                reverse: false,
            },
            false,
        )
    }

    /// Up to `limit` addresses of events of a category (`ns` = [`crate::keytable::NS_CATEGORY`]) or type
    /// ([`crate::keytable::NS_TYPE`]) from `from` on (forward) or down from it (backward), in that order; hash
    /// collisions may add other events.
    pub fn list_lookup(
        &self,
        ns: u64,
        name: &str,
        from: u64,
        forward: bool,
        limit: usize,
    ) -> Lookup {
        let (lo, hi) = if forward { (from, u64::MAX) } else { (0, from) };
        self.lookup(
            Query {
                key: key(ns, name, self.hash_bits),
                lo,
                hi,
                limit,
                reverse: !forward,
            },
            true,
        )
    }

    /// Freezes the memtable as sealed segment `seg`'s run, until its table is written.
    pub fn freeze(&mut self, seg: u32) -> Arc<Memtable> {
        let mem = Arc::new(std::mem::take(&mut self.memtable));
        self.runs.push(Run::Frozen {
            seg,
            mem: mem.clone(),
        });
        mem
    }

    /// A sealed segment whose table could not be written at open: its entries stay in memory.
    pub fn push_frozen(&mut self, seg: u32, mem: Arc<Memtable>) {
        self.runs.push(Run::Frozen { seg, mem });
    }

    /// Adds the sealed segments' tables (at open, beside any frozen run) and sorts the runs
    /// by segment.
    pub fn set_tables(&mut self, tables: impl Iterator<Item = Arc<Table>>) {
        self.runs.extend(tables.map(Run::Table));
        self.runs.sort_by_key(Run::first_seg);
    }

    /// Replaces segment `seg`'s frozen memtable by its table, now written.
    pub fn table_written(&mut self, table: Arc<Table>) {
        for r in &mut self.runs {
            if matches!(r, Run::Frozen { seg, .. } if *seg == table.first_seg && *seg == table.last_seg)
            {
                *r = Run::Table(table);
                return;
            }
        }
    }

    /// The oldest `fanout` adjacent tables of one size class (segments covered, in powers of
    /// `fanout`), if there are that many: what to merge next.
    pub fn merge_candidates(&self, fanout: usize) -> Option<Vec<Arc<Table>>> {
        let level = |t: &Table| (t.last_seg - t.first_seg + 1).ilog(fanout as u32);
        let tables: Vec<&Arc<Table>> = self
            .runs
            .iter()
            .map_while(|r| match r {
                Run::Table(t) => Some(t),
                Run::Frozen { .. } => None,
            })
            .collect();
        let mut i = 0;
        while i < tables.len() {
            let l = level(tables[i]);
            let mut j = i;
            while j < tables.len() && level(tables[j]) == l {
                j += 1;
            }
            if j - i >= fanout {
                return Some(tables[i..i + fanout].iter().map(|t| (*t).clone()).collect());
            }
            i = j;
        }
        None
    }

    /// Replaces the tables `inputs` (adjacent runs) by `merged`; `false` if they are not there.
    pub fn merged(&mut self, inputs: &[Arc<Table>], merged: Arc<Table>) -> bool {
        let Some(first) = inputs.first() else {
            return false;
        };
        let Some(at) = self
            .runs
            .iter()
            .position(|r| matches!(r, Run::Table(t) if Arc::ptr_eq(t, first)))
        else {
            return false;
        };
        let same = inputs.iter().enumerate().all(
            |(k, t)| matches!(self.runs.get(at + k), Some(Run::Table(r)) if Arc::ptr_eq(r, t)),
        );
        if !same {
            return false;
        }
        self.runs
            .splice(at..at + inputs.len(), [Run::Table(merged)]);
        true
    }

    /// How many runs a stream read may touch.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Whether a frozen memtable waits to be written as a key table.
    pub fn has_frozen(&self) -> bool {
        self.runs.iter().any(|r| matches!(r, Run::Frozen { .. }))
    }

    /// Streams in name order, from `lower` on.
    pub fn names_from<'a>(
        &'a self,
        lower: std::ops::Bound<&str>,
    ) -> impl Iterator<Item = (&'a Arc<str>, &'a StreamState)> + 'a {
        self.names
            .range::<str, _>((lower, std::ops::Bound::Unbounded))
            .map(|(n, &i)| (n, &self.streams[i as usize]))
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// The address of the last sparse entry at or before `position`: where a scan for it starts.
    pub fn sparse_floor(&self, position: u64) -> Option<(u64, u64)> {
        let i = self.sparse.partition_point(|&(p, _)| p <= position);
        (i > 0).then(|| self.sparse[i - 1])
    }

    /// The first sparse entry at or after `position`.
    pub fn sparse_ceil(&self, position: u64) -> Option<(u64, u64)> {
        let i = self.sparse.partition_point(|&(p, _)| p < position);
        self.sparse.get(i).copied()
    }

    /// The sparse entries, for backward scans.
    pub fn sparse(&self) -> &[(u64, u64)] {
        &self.sparse
    }

    /// Starts replaying a segment: `compacted` is what its header says (see
    /// [`crate::format::SegmentHeader`]). A compacted segment must start where the log before
    /// it ended; its records may then leave gaps up to the end it names.
    pub fn begin_segment(
        &mut self,
        compacted: Option<&std::ops::Range<u64>>,
    ) -> Result<(), Inconsistent> {
        if let Some(span) = compacted {
            if span.start != self.next_position {
                return Err(Inconsistent(format!(
                    "compacted segment spans positions {}..{} but the log before it ends at position {}",
                    span.start, span.end, self.next_position
                )));
            }
            self.gaps_ok = true;
            self.compacted_end = Some(span.end);
        }
        Ok(())
    }

    /// Ends the segment [`Index::begin_segment`] started: after a compacted one, the log goes
    /// on from the end of the positions it spans (a segment ends with a whole transaction).
    pub fn end_segment(&mut self) {
        if let Some(end) = self.compacted_end.take() {
            self.next_position = end;
            self.last_was_tx_end = true;
        }
    }

    /// After a scavenge rewrote sealed segment `seg`: its sparse entries become `sparse` (the
    /// new file's, in position order) and `removed_events` event records are gone.
    pub fn compacted(&mut self, seg: u32, sparse: Vec<(u64, u64)>, removed_events: u64) {
        let lo = self
            .sparse
            .partition_point(|&(_, a)| (a >> 32) < u64::from(seg));
        let hi = self
            .sparse
            .partition_point(|&(_, a)| (a >> 32) <= u64::from(seg));
        self.sparse.splice(lo..hi, sparse);
        self.events -= removed_events.min(self.events);
    }

    /// The key tables covering sealed segment `seg` (one, as runs cover each segment once;
    /// none when a frozen memtable does).
    pub fn table_covering(&self, seg: u32) -> Option<Arc<Table>> {
        self.runs.iter().find_map(|r| match r {
            Run::Table(t) if t.first_seg <= seg && seg <= t.last_seg => Some(t.clone()),
            _ => None,
        })
    }

    /// Replaces the key table `old` by `new` (covering the same segments); `false` if `old` is
    /// no longer a run.
    pub fn replace_table(&mut self, old: &Arc<Table>, new: Vec<Arc<Table>>) -> bool {
        let Some(at) = self
            .runs
            .iter()
            .position(|r| matches!(r, Run::Table(t) if Arc::ptr_eq(t, old)))
        else {
            return false;
        };
        self.runs
            .splice(at..at + 1, new.into_iter().map(Run::Table));
        true
    }

    /// The sealed segments whose entries are in key tables on disk (not frozen memtables).
    pub fn tabled_segments(&self) -> Vec<u32> {
        self.runs
            .iter()
            .filter_map(|r| match r {
                Run::Table(t) => Some(t.first_seg..=t.last_seg),
                Run::Frozen { .. } => None,
            })
            .flatten()
            .collect()
    }

    /// Applies one durable record, in log order, to the stream states and the sparse map (not
    /// to the memtable: see [`Memtable::add_event`]). `stream_id` is the record's interned id
    /// (from [`Index::stream_id_or_insert`]).
    pub fn apply(
        &mut self,
        s: &Summary<'_>,
        stream_id: u32,
        metadata: Option<StreamMetadata>,
    ) -> Result<(), Inconsistent> {
        match self.compacted_end {
            None if s.position != self.next_position => {
                return Err(Inconsistent(format!(
                    "record at position {} follows position {}; positions must be contiguous",
                    s.position,
                    self.next_position.wrapping_sub(1)
                )));
            }
            Some(end) if s.position < self.next_position || s.position >= end => {
                return Err(Inconsistent(format!(
                    "record at position {} lies outside positions {}..{} that are left to the compacted segment holding it",
                    s.position, self.next_position, end
                )));
            }
            _ => {}
        }
        let segment = (s.addr >> 32) as u32;
        if self.last_segment != Some(segment) || s.position.is_multiple_of(SPARSE_EVERY) {
            self.sparse.push((s.position, s.addr));
            self.last_segment = Some(segment);
        }
        let first_of_tx = self.last_was_tx_end;
        let st = &mut self.streams[stream_id as usize];
        match s.kind {
            Kind::Event => {
                if st.tombstoned {
                    return Err(Inconsistent(format!(
                        "event at position {} follows the tombstone of stream {}",
                        s.position, st.name
                    )));
                }
                // After a compacted segment, the events a scavenge removed leave gaps.
                let skipped = self.gaps_ok && s.revision > st.next_revision;
                if s.revision != st.next_revision && !skipped {
                    return Err(Inconsistent(format!(
                        "event at position {} has revision {} of stream {} but the stream is at {}",
                        s.position, s.revision, st.name, st.next_revision
                    )));
                }
                st.next_revision = s.revision + 1;
                st.last_position = s.position;
                match (&mut st.last_batch, first_of_tx) {
                    (Some(b), false) => {
                        b.len += 1;
                        b.last_position = s.position;
                    }
                    (b, _) => {
                        *b = Some(LastBatch {
                            first_revision: s.revision,
                            len: 1,
                            first_position: s.position,
                            last_position: s.position,
                            first_id: s.id,
                        })
                    }
                }
                self.events += 1;
            }
            Kind::Metadata => {
                st.metadata = metadata.unwrap_or_default();
            }
            Kind::SoftDelete => {
                if s.revision != NO_REVISION {
                    st.deleted_before = st.deleted_before.max(s.revision + 1);
                }
            }
            Kind::Tombstone => {
                st.tombstoned = true;
            }
        }
        self.last_was_tx_end = s.flags & FLAG_TX_END != 0;
        self.next_position = s.position + 1;
        Ok(())
    }

    /// Estimated heap bytes held by the indexes in memory (stream states, sparse map,
    /// memtables and table fences; not the page cache of table files).
    pub fn heap_bytes(&self) -> u64 {
        let streams: usize = self
            .streams
            .iter()
            .map(|s| std::mem::size_of::<StreamState>() + s.name.len() * 2 + 64)
            .sum();
        let runs: u64 = self
            .runs
            .iter()
            .map(|r| match r {
                Run::Frozen { mem, .. } => mem.heap_bytes(),
                Run::Table(t) => t.summary_bytes(),
            })
            .sum();
        (streams + self.sparse.capacity() * 16) as u64 + self.memtable.heap_bytes() + runs
    }
}
