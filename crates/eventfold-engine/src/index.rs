//! The in-memory indexes, derived from the log: stream → revision → address, category and
//! event type → addresses, and a sparse position → address map. Addresses grow with positions
//! (the log is append-only), so every list here is sorted by position too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use eventfold_core::{LastAppend, StreamHead, StreamMetadata, category_of};

use crate::format::{FLAG_TX_END, Kind, NO_REVISION};

/// One sparse entry per this many records: a position lookup scans at most this many records.
pub const SPARSE_EVERY: u64 = 64;

/// The stream's most recent append, for idempotent retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastBatch {
    pub first_revision: u64,
    pub len: u64,
    pub first_position: u64,
    pub last_position: u64,
    /// The id of its first event; `None` until read back from the log (after a reopen).
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

/// What the index knows about one stream.
#[derive(Debug, Clone)]
pub struct StreamState {
    pub name: Arc<str>,
    /// Address of each revision's record (index = revision).
    pub addrs: Vec<u64>,
    pub last_position: u64,
    /// Revisions below this were soft-deleted.
    pub deleted_before: u64,
    pub tombstoned: bool,
    pub metadata: StreamMetadata,
    pub last_batch: Option<LastBatch>,
}

impl StreamState {
    fn new(name: Arc<str>) -> Self {
        StreamState {
            name,
            addrs: Vec::new(),
            last_position: 0,
            deleted_before: 0,
            tombstoned: false,
            metadata: StreamMetadata::default(),
            last_batch: None,
        }
    }

    /// The revision the next event gets.
    pub fn next_revision(&self) -> u64 {
        self.addrs.len() as u64
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

/// The indexes.
#[derive(Debug, Default)]
pub struct Index {
    names: BTreeMap<Arc<str>, u32>,
    streams: Vec<StreamState>,
    stream_category: Vec<u32>,
    category_ids: HashMap<Arc<str>, u32>,
    categories: Vec<Vec<u64>>,
    type_ids: HashMap<Arc<str>, u32>,
    types: Vec<Vec<u64>>,
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
}

impl Index {
    pub fn new() -> Self {
        Index {
            last_was_tx_end: true,
            ..Index::default()
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
        let cat = intern(
            &mut self.category_ids,
            &mut self.categories,
            category_of(&name),
        );
        self.stream_category.push(cat);
        self.streams.push(StreamState::new(name));
        id
    }

    pub fn type_id_or_insert(&mut self, name: &str) -> u32 {
        intern(&mut self.type_ids, &mut self.types, name)
    }

    /// Addresses of the events of a category, in log order.
    pub fn category(&self, category: &str) -> &[u64] {
        self.category_ids
            .get(category)
            .map_or(&[], |&i| &self.categories[i as usize])
    }

    /// Addresses of the events of a type, in log order.
    pub fn event_type(&self, event_type: &str) -> &[u64] {
        self.type_ids
            .get(event_type)
            .map_or(&[], |&i| &self.types[i as usize])
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

    /// Applies one durable record, in log order. `stream_id` and `type_id` are the record's
    /// interned ids (from [`Index::stream_id_or_insert`] / [`Index::type_id_or_insert`]).
    pub fn apply(
        &mut self,
        s: &Summary<'_>,
        stream_id: u32,
        type_id: Option<u32>,
        metadata: Option<StreamMetadata>,
    ) -> Result<(), Inconsistent> {
        if s.position != self.next_position {
            return Err(Inconsistent(format!(
                "record at position {} follows position {}; positions must be contiguous",
                s.position,
                self.next_position.wrapping_sub(1)
            )));
        }
        let segment = (s.addr >> 32) as u32;
        if self.last_segment != Some(segment) || s.position.is_multiple_of(SPARSE_EVERY) {
            self.sparse.push((s.position, s.addr));
            self.last_segment = Some(segment);
        }
        let first_of_tx = self.last_was_tx_end;
        let cat = self.stream_category[stream_id as usize];
        let st = &mut self.streams[stream_id as usize];
        match s.kind {
            Kind::Event => {
                if st.tombstoned {
                    return Err(Inconsistent(format!(
                        "event at position {} follows the tombstone of stream {}",
                        s.position, st.name
                    )));
                }
                if s.revision != st.next_revision() {
                    return Err(Inconsistent(format!(
                        "event at position {} has revision {} of stream {} but the stream is at {}",
                        s.position,
                        s.revision,
                        st.name,
                        st.next_revision()
                    )));
                }
                st.addrs.push(s.addr);
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
                self.categories[cat as usize].push(s.addr);
                if let Some(t) = type_id {
                    self.types[t as usize].push(s.addr);
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

    /// Estimated heap bytes held by the indexes.
    pub fn heap_bytes(&self) -> u64 {
        let lists: usize = self
            .categories
            .iter()
            .chain(self.types.iter())
            .map(|v| v.capacity() * 8)
            .sum();
        let streams: usize = self
            .streams
            .iter()
            .map(|s| {
                s.addrs.capacity() * 8 + std::mem::size_of::<StreamState>() + s.name.len() * 2 + 64
            })
            .sum();
        (lists + streams + self.sparse.capacity() * 16 + self.stream_category.capacity() * 4) as u64
    }
}

fn intern(ids: &mut HashMap<Arc<str>, u32>, lists: &mut Vec<Vec<u64>>, name: &str) -> u32 {
    if let Some(&i) = ids.get(name) {
        return i;
    }
    let i = lists.len() as u32;
    ids.insert(Arc::from(name), i);
    lists.push(Vec::new());
    i
}
