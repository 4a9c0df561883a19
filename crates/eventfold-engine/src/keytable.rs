//! The on-disk part of the indexes: sorted, immutable key tables (`FIRST-LAST.ktab`), one per
//! sealed segment at first and merged in the background into fewer, larger ones (like
//! EventStoreDB's PTables). An entry is `(key, ordinal, address)`: the key is a 64-bit hash of a
//! stream name, category or event type (namespace in the top two bits), the ordinal is the
//! event's revision (streams) or its address (categories, types). Entries are sorted by
//! `(key, ordinal)` in 4 KiB pages, each with its own CRC32C checked when read; a fence per page
//! (its first key and ordinal) stays in memory. A hash says nothing certain about the name:
//! readers check the record they read (stream, revision, category or type) and drop strangers.
//!
//! The active segment's entries live in a [`Memtable`]; when the segment is sealed the memtable
//! is frozen (still readable) until its table is written. All of it is derived data.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use foldhash::fast::RandomState;

use crate::io::FileIo;
use crate::segment::read_at_most;

/// Key namespaces (top two bits of a key): a stream, a category and an event type of the same
/// name never share a key.
pub const NS_STREAM: u64 = 1;
pub const NS_CATEGORY: u64 = 2;
pub const NS_TYPE: u64 = 3;

/// Hash bits a key keeps below its namespace. Tests narrow them (`EngineOptions::index_hash_bits`)
/// to force collisions.
pub const KEY_HASH_BITS_MAX: u32 = 62;

const PAGE_BYTES: usize = 4096;
const PAGE_HEADER_BYTES: usize = 4;
const ENTRY_BYTES: usize = 24;
/// Entries per page: what fits between the 4-byte header and the 4-byte CRC at the end.
const PAGE_ENTRIES_MAX: usize = (PAGE_BYTES - PAGE_HEADER_BYTES - 4) / ENTRY_BYTES;
const FENCE_BYTES: usize = 16;
const TRAILER_BYTES: usize = 48;
const TABLE_MAGIC: &[u8; 8] = b"EVFLDKTB";
/// The version tables are written in. Version 1's bloom filter holds the table's keys; version
/// 2's holds them and, for each stream key, the revision buckets it has entries in
/// ([`bucket_item`]), so a stream read skips the tables that hold the stream but none of the
/// revisions it asks for. Both are read.
const TABLE_VERSION: u32 = 2;
/// A stream key's revisions fall in buckets of `1 << REVISION_BUCKET_SHIFT` (32) in a version 2
/// table's bloom filter.
const REVISION_BUCKET_SHIFT: u32 = 5;
/// A stream read asks a table's bloom filter for each bucket its revision range spans when it
/// spans at most this many (2,048 revisions); a longer read asks for the key alone.
const BUCKET_PROBES_MAX: u64 = 64;
/// Most pages a lookup reads at once (64 KiB).
const QUERY_READ_PAGES: usize = 16;
/// Read-ahead of a merge's input tables, per input.
const MERGE_READ_BYTES: usize = 64 * PAGE_BYTES;

/// The key of `name` in namespace `ns`, keeping `hash_bits` bits of its hash. The hash is
/// FNV-1a 64 with the splitmix64 finalizer: fixed here forever for version 1 tables, since
/// tables on disk are sorted by it.
pub fn key(ns: u64, name: &str, hash_bits: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let bits = hash_bits.min(KEY_HASH_BITS_MAX);
    let mask = if bits == 0 {
        0
    } else {
        u64::MAX >> (64 - bits)
    };
    (ns << 62) | (h & mask)
}

/// The key's namespace ([`NS_STREAM`], [`NS_CATEGORY`] or [`NS_TYPE`]).
fn namespace(key: u64) -> u64 {
    key >> 62
}

/// What a version 2 table's bloom filter holds for a stream key's revisions in bucket `bucket`
/// (beside the key itself): the key with the bucket mixed in, as the filter's probes remix it.
fn bucket_item(key: u64, bucket: u64) -> u64 {
    key ^ bucket.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The stream and category keys of a stream's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKeys {
    pub stream: u64,
    pub category: u64,
}

impl EventKeys {
    pub fn of_stream(stream: &str, hash_bits: u32) -> Self {
        EventKeys {
            stream: key(NS_STREAM, stream, hash_bits),
            category: key(NS_CATEGORY, eventfold_core::category_of(stream), hash_bits),
        }
    }
}

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyEntry {
    pub key: u64,
    pub ordinal: u64,
    pub addr: u64,
}

/// What a lookup wants: entries of `key` with `lo <= ordinal <= hi`, at most `limit`, from
/// the lowest ordinal up (or from the highest down when `reverse`).
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub key: u64,
    pub lo: u64,
    pub hi: u64,
    pub limit: usize,
    pub reverse: bool,
}

impl Query {
    fn below(&self, e: &KeyEntry) -> bool {
        (e.key, e.ordinal) < (self.key, self.lo)
    }
    fn above(&self, e: &KeyEntry) -> bool {
        (e.key, e.ordinal) > (self.key, self.hi)
    }
}

/// The active segment's entries (and, frozen, a sealed segment's until its table is written).
#[derive(Debug, Default)]
pub struct Memtable {
    /// Per key, `(ordinal, address)` sorted.
    map: HashMap<u64, Vec<(u64, u64)>, RandomState>,
    entries: usize,
}

impl Memtable {
    pub fn add(&mut self, key: u64, ordinal: u64, addr: u64) {
        let list = self.map.entry(key).or_default();
        // Entries of one name arrive in ordinal order; only names whose keys collide interleave.
        if list.last().is_some_and(|&last| last > (ordinal, addr)) {
            let at = list.partition_point(|&e| e < (ordinal, addr));
            list.insert(at, (ordinal, addr));
        } else {
            list.push((ordinal, addr));
        }
        self.entries += 1;
    }

    /// Adds the three entries of an event: its stream, its category and its type.
    pub fn add_event(
        &mut self,
        stream: &str,
        event_type: &str,
        revision: u64,
        addr: u64,
        hash_bits: u32,
    ) {
        self.add_event_keys(
            &EventKeys::of_stream(stream, hash_bits),
            key(NS_TYPE, event_type, hash_bits),
            revision,
            addr,
        );
    }

    /// [`Memtable::add_event`] with the keys computed by the caller, who may reuse them for
    /// the events of one batch.
    pub fn add_event_keys(&mut self, keys: &EventKeys, type_key: u64, revision: u64, addr: u64) {
        self.add(keys.stream, revision, addr);
        self.add(keys.category, addr, addr);
        self.add(type_key, addr, addr);
    }

    pub fn query(&self, q: &Query, out: &mut Vec<(u64, u64)>) {
        let Some(list) = self.map.get(&q.key) else {
            return;
        };
        let from = list.partition_point(|&(o, _)| o < q.lo);
        let to = list.partition_point(|&(o, _)| o <= q.hi);
        let hits = &list[from..to.max(from)];
        if q.reverse {
            out.extend(hits.iter().rev().take(q.limit));
        } else {
            out.extend(hits.iter().take(q.limit));
        }
    }

    /// Every entry, sorted as a table holds them.
    pub fn sorted(&self) -> Vec<KeyEntry> {
        let mut keys: Vec<u64> = self.map.keys().copied().collect();
        keys.sort_unstable();
        let mut out = Vec::with_capacity(self.entries);
        for k in keys {
            let list = &self.map[&k];
            let start = out.len();
            out.extend(list.iter().map(|&(ordinal, addr)| KeyEntry {
                key: k,
                ordinal,
                addr,
            }));
            // Ordinals arrive in order; sorting again only guards the invariant cheaply.
            out[start..].sort_unstable();
        }
        out
    }

    pub fn heap_bytes(&self) -> u64 {
        (self.map.capacity() * 40 + self.map.values().map(|v| v.capacity() * 16).sum::<usize>())
            as u64
    }
}

/// A key table file on disk, open for reads.
#[derive(Debug)]
pub struct Table {
    pub first_seg: u32,
    pub last_seg: u32,
    pub entries: u64,
    pub path: PathBuf,
    file: File,
    /// `(key, ordinal)` of each page's first entry.
    fences: Vec<(u64, u64)>,
    /// Which keys (and, in version 2, which revision buckets of stream keys) the table may hold.
    bloom: Bloom,
    /// The bloom filter holds stream keys' revision buckets (version 2).
    buckets: bool,
}

/// A bloom filter of a table's keys (and in version 2 of its stream keys' revision buckets):
/// [`BLOOM_BITS_PER_KEY`] bits per item and [`BLOOM_PROBES`] probes (about 1% false
/// positives). A stream read asks every table; this lets it skip, without I/O, the tables that
/// hold nothing of the stream, or nothing of the revisions it asks for.
#[derive(Debug, Default)]
struct Bloom {
    bits: Vec<u8>,
}

/// Bits per distinct key.
const BLOOM_BITS_PER_KEY: usize = 10;
/// Probes per key.
const BLOOM_PROBES: u64 = 7;

impl Bloom {
    fn build(keys: &[u64]) -> Bloom {
        let bytes = (keys.len() * BLOOM_BITS_PER_KEY).div_ceil(8).max(8);
        let mut b = Bloom {
            bits: vec![0u8; bytes],
        };
        for &k in keys {
            for bit in b.probes(k) {
                b.bits[bit / 8] |= 1 << (bit % 8);
            }
        }
        b
    }

    fn probes(&self, key: u64) -> impl Iterator<Item = usize> + use<> {
        // Double hashing from a remix of the key (keys may keep few hash bits in tests).
        let mut h = key ^ (key >> 33);
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        let (h1, h2) = (h, (h >> 32) | 1);
        let m = (self.bits.len() * 8) as u64;
        (0..BLOOM_PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m) as usize)
    }

    fn may_contain(&self, key: u64) -> bool {
        self.bits.is_empty()
            || self
                .probes(key)
                .all(|bit| self.bits[bit / 8] & (1 << (bit % 8)) != 0)
    }
}

pub fn table_file_name(first: u32, last: u32) -> String {
    format!("{first:010}-{last:010}.ktab")
}

/// `(first, last)` segments of a table file name.
pub fn parse_table_file_name(name: &str) -> Option<(u32, u32)> {
    let stem = name.strip_suffix(".ktab")?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 10 || b.len() != 10 {
        return None;
    }
    let (a, b) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b).then_some((a, b))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn decode_page(page: &[u8], out: &mut Vec<KeyEntry>) -> Result<(), String> {
    let stored = u32_at(page, PAGE_BYTES - 4);
    if crc32c::crc32c(&page[..PAGE_BYTES - 4]) != stored {
        return Err("page checksum mismatch".into());
    }
    let n = usize::from(u16::from_le_bytes([page[0], page[1]]));
    if n == 0 || n > PAGE_ENTRIES_MAX {
        return Err(format!("page holds {n} entries"));
    }
    for i in 0..n {
        let at = PAGE_HEADER_BYTES + i * ENTRY_BYTES;
        out.push(KeyEntry {
            key: u64_at(page, at),
            ordinal: u64_at(page, at + 8),
            addr: u64_at(page, at + 16),
        });
    }
    Ok(())
}

impl Table {
    /// Opens a table: checks its trailer and fences (pages are checked when read). `Err` says
    /// why it cannot be used; the caller rebuilds it from the log.
    pub fn open(path: &Path, hash_bits: u32) -> Result<Table, String> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("not a table name")?;
        let (first, last) = parse_table_file_name(name).ok_or("not a table name")?;
        let file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
        let len = file
            .metadata()
            .map_err(|e| format!("cannot stat it: {e}"))?
            .len();
        if len < TRAILER_BYTES as u64 {
            return Err("too short".into());
        }
        let mut trailer = [0u8; TRAILER_BYTES];
        read_exact(&file, &mut trailer, len - TRAILER_BYTES as u64)?;
        if &trailer[0..8] != TABLE_MAGIC {
            return Err("bad magic".into());
        }
        let version = u32_at(&trailer, 8);
        if !(1..=TABLE_VERSION).contains(&version) {
            return Err("unknown table version".into());
        }
        if (u32_at(&trailer, 12), u32_at(&trailer, 16)) != (first, last) {
            return Err("it describes other segments than its name".into());
        }
        if u32_at(&trailer, 20) != hash_bits {
            return Err("built with another key hash width".into());
        }
        let entries = u64_at(&trailer, 24);
        let pages = u64_at(&trailer, 32);
        let bloom_bytes = u64::from(u32_at(&trailer, 40));
        let expect_len = pages
            .checked_mul((PAGE_BYTES + FENCE_BYTES) as u64)
            .and_then(|n| n.checked_add(TRAILER_BYTES as u64 + bloom_bytes));
        if expect_len != Some(len) || entries > pages * PAGE_ENTRIES_MAX as u64 {
            return Err("its size does not match its page count".into());
        }
        let fence_bytes = (pages as usize) * FENCE_BYTES;
        let mut buf = vec![0u8; fence_bytes + bloom_bytes as usize + TRAILER_BYTES - 4];
        read_exact(&file, &mut buf, pages * PAGE_BYTES as u64)?;
        if crc32c::crc32c(&buf) != u32_at(&trailer, TRAILER_BYTES - 4) {
            return Err("fence checksum mismatch".into());
        }
        let fences = buf[..fence_bytes]
            .chunks_exact(FENCE_BYTES)
            .map(|c| (u64_at(c, 0), u64_at(c, 8)))
            .collect::<Vec<_>>();
        let bloom = Bloom {
            bits: buf[fence_bytes..fence_bytes + bloom_bytes as usize].to_vec(),
        };
        if fences.windows(2).any(|w| w[0] > w[1]) {
            return Err("fences out of order".into());
        }
        Ok(Table {
            first_seg: first,
            last_seg: last,
            entries,
            path: path.to_path_buf(),
            file,
            fences,
            bloom,
            buckets: version >= 2,
        })
    }

    /// Whether the table may hold entries `q` asks for, by its bloom filter (no I/O).
    fn may_hold(&self, q: &Query) -> bool {
        if !self.bloom.may_contain(q.key) {
            return false;
        }
        if !self.buckets || namespace(q.key) != NS_STREAM || q.lo > q.hi {
            return true;
        }
        let (first, last) = (q.lo >> REVISION_BUCKET_SHIFT, q.hi >> REVISION_BUCKET_SHIFT);
        last - first >= BUCKET_PROBES_MAX
            || (first..=last).any(|b| self.bloom.may_contain(bucket_item(q.key, b)))
    }

    /// Reads pages `pages` in one read and appends their entries to `out`, in order.
    fn read_pages(
        &self,
        pages: std::ops::Range<usize>,
        buf: &mut Vec<u8>,
        out: &mut Vec<KeyEntry>,
    ) -> io::Result<()> {
        buf.resize(pages.len() * PAGE_BYTES, 0);
        read_exact(&self.file, buf, (pages.start * PAGE_BYTES) as u64).map_err(io::Error::other)?;
        for (page, bytes) in pages.zip(buf.chunks_exact(PAGE_BYTES)) {
            decode_page(bytes, out).map_err(|why| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} page {page}: {why}; the table is derived data: delete it and the next open rebuilds it",
                        self.path.display()
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// Appends the `(ordinal, address)` of the entries `q` asks for to `out`. The pages that
    /// may hold them are known from the fences; they are read together, up to as many as the
    /// limit can fill (and [`QUERY_READ_PAGES`]) per read.
    pub fn query(&self, q: &Query, out: &mut Vec<(u64, u64)>) -> io::Result<()> {
        if q.limit == 0 || !self.may_hold(q) {
            return Ok(());
        }
        // The first page that may hold entries of the range is the last one beginning below
        // it (entries equal in key and ordinal may continue across pages); the last is the
        // last one beginning inside it.
        let first = self
            .fences
            .partition_point(|&f| f < (q.key, q.lo))
            .saturating_sub(1);
        let end = self.fences.partition_point(|&f| f <= (q.key, q.hi));
        if first >= end {
            return Ok(());
        }
        let per_read = q
            .limit
            .div_ceil(PAGE_ENTRIES_MAX)
            .saturating_add(1)
            .min(QUERY_READ_PAGES);
        let mut buf = Vec::new();
        let mut entries = Vec::new();
        let taken = out.len();
        // Whether to go on past `e`: entries before the range (in the read's direction) are
        // skipped, the first after it or past the limit ends the read.
        let mut take = |e: &KeyEntry| {
            let (before, after) = if q.reverse {
                (q.above(e), q.below(e))
            } else {
                (q.below(e), q.above(e))
            };
            if before {
                return true;
            }
            if after || out.len() - taken >= q.limit {
                return false;
            }
            out.push((e.ordinal, e.addr));
            true
        };
        if !q.reverse {
            let mut at = first;
            while at < end {
                let pages = at..end.min(at + per_read);
                at = pages.end;
                entries.clear();
                self.read_pages(pages, &mut buf, &mut entries)?;
                if !entries.iter().all(&mut take) {
                    break;
                }
            }
        } else {
            let mut at = end;
            while at > first {
                let pages = at.saturating_sub(per_read).max(first)..at;
                at = pages.start;
                entries.clear();
                self.read_pages(pages, &mut buf, &mut entries)?;
                if !entries.iter().rev().all(&mut take) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Memory held for the table: fences and bloom filter.
    pub fn summary_bytes(&self) -> u64 {
        (self.fences.capacity() * FENCE_BYTES + self.bloom.bits.capacity()) as u64
    }
}

fn read_exact(file: &File, buf: &mut [u8], off: u64) -> Result<(), String> {
    let n = read_at_most(file, buf, off).map_err(|e| format!("cannot read it: {e}"))?;
    if n != buf.len() {
        return Err("truncated".into());
    }
    Ok(())
}

/// Writes a table from entries given in sorted order: to `NAME.tmp`, flushed, renamed, and
/// the directory flushed (when `sync`).
pub struct TableWriter<'io> {
    io: &'io dyn FileIo,
    dir: PathBuf,
    first: u32,
    last: u32,
    hash_bits: u32,
    tmp: PathBuf,
    file: File,
    /// Flush (paced while writing, whole at the end).
    sync: bool,
    pacer: crate::io::Pacer,
    /// Bytes not yet written, at `written` of the file (flushed at [`MERGE_READ_BYTES`]).
    out: Vec<u8>,
    written: u64,
    page: Vec<u8>,
    in_page: usize,
    fences: Vec<(u64, u64)>,
    entries: u64,
    prev: Option<KeyEntry>,
    /// Distinct keys and stream keys' revision buckets, for the bloom filter.
    keys: Vec<u64>,
    /// The version written ([`TABLE_VERSION`]; tests write version 1 too).
    version: u32,
}

impl<'io> TableWriter<'io> {
    pub fn create(
        io: &'io dyn FileIo,
        dir: &Path,
        first: u32,
        last: u32,
        hash_bits: u32,
        sync: bool,
    ) -> io::Result<TableWriter<'io>> {
        let tmp = dir.join(format!("{}.tmp", table_file_name(first, last)));
        let file = io.open_rw(&tmp, true, true)?;
        Ok(TableWriter {
            io,
            dir: dir.to_path_buf(),
            first,
            last,
            hash_bits,
            tmp,
            file,
            sync,
            pacer: crate::io::Pacer::new(sync, 0),
            out: Vec::with_capacity(MERGE_READ_BYTES),
            written: 0,
            page: vec![0u8; PAGE_BYTES],
            in_page: 0,
            fences: Vec::new(),
            entries: 0,
            prev: None,
            keys: Vec::new(),
            version: TABLE_VERSION,
        })
    }

    pub fn push(&mut self, e: KeyEntry) -> io::Result<()> {
        if self.prev.is_some_and(|p| p >= e) {
            return Err(io::Error::other(
                "key table entries out of order (a bug in the index builder)",
            ));
        }
        let new_key = self.prev.is_none_or(|p| p.key != e.key);
        if new_key {
            self.keys.push(e.key);
        }
        let bucket = e.ordinal >> REVISION_BUCKET_SHIFT;
        if self.version >= 2
            && namespace(e.key) == NS_STREAM
            && (new_key
                || self
                    .prev
                    .is_some_and(|p| p.ordinal >> REVISION_BUCKET_SHIFT != bucket))
        {
            self.keys.push(bucket_item(e.key, bucket));
        }
        self.prev = Some(e);
        if self.in_page == 0 {
            self.fences.push((e.key, e.ordinal));
        }
        let at = PAGE_HEADER_BYTES + self.in_page * ENTRY_BYTES;
        self.page[at..at + 8].copy_from_slice(&e.key.to_le_bytes());
        self.page[at + 8..at + 16].copy_from_slice(&e.ordinal.to_le_bytes());
        self.page[at + 16..at + 24].copy_from_slice(&e.addr.to_le_bytes());
        self.in_page += 1;
        self.entries += 1;
        if self.in_page == PAGE_ENTRIES_MAX {
            self.end_page()?;
        }
        Ok(())
    }

    fn end_page(&mut self) -> io::Result<()> {
        let n = self.in_page as u16;
        self.page[0..2].copy_from_slice(&n.to_le_bytes());
        let used = PAGE_HEADER_BYTES + self.in_page * ENTRY_BYTES;
        self.page[used..PAGE_BYTES - 4].fill(0);
        let crc = crc32c::crc32c(&self.page[..PAGE_BYTES - 4]);
        self.page[PAGE_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
        self.out.extend_from_slice(&self.page);
        self.in_page = 0;
        if self.out.len() >= MERGE_READ_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.io.write_file_at(&self.file, &self.out, self.written)?;
        self.written += self.out.len() as u64;
        // Flushed as it grows, not only whole at the end (see `io::write_paced`).
        self.pacer.wrote(self.io, &self.file, self.written)?;
        self.out.clear();
        Ok(())
    }

    /// Finishes the file and makes it the table `FIRST-LAST.ktab`; returns it opened.
    pub fn finish(mut self) -> io::Result<Table> {
        let sync = self.sync;
        if self.in_page > 0 {
            self.end_page()?;
        }
        let mut tail = Vec::with_capacity(self.fences.len() * FENCE_BYTES + TRAILER_BYTES);
        for &(k, o) in &self.fences {
            tail.extend_from_slice(&k.to_le_bytes());
            tail.extend_from_slice(&o.to_le_bytes());
        }
        let bloom = Bloom::build(&self.keys);
        let bloom_bytes = u32::try_from(bloom.bits.len())
            .map_err(|_| io::Error::other("bloom filter larger than 4 GiB"))?;
        tail.extend_from_slice(&bloom.bits);
        tail.extend_from_slice(TABLE_MAGIC);
        tail.extend_from_slice(&self.version.to_le_bytes());
        tail.extend_from_slice(&self.first.to_le_bytes());
        tail.extend_from_slice(&self.last.to_le_bytes());
        tail.extend_from_slice(&self.hash_bits.to_le_bytes());
        tail.extend_from_slice(&self.entries.to_le_bytes());
        tail.extend_from_slice(&(self.fences.len() as u64).to_le_bytes());
        tail.extend_from_slice(&bloom_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&tail);
        tail.extend_from_slice(&crc.to_le_bytes());
        self.out.extend_from_slice(&tail);
        self.flush()?;
        if sync {
            self.io.sync_all(&self.file)?;
        }
        drop(self.file);
        let path = self.dir.join(table_file_name(self.first, self.last));
        self.io.rename(&self.tmp, &path)?;
        if sync {
            self.io.sync_dir(&self.dir)?;
        }
        Table::open(&path, self.hash_bits).map_err(io::Error::other)
    }
}

/// Writes the table of one sealed segment from its frozen memtable.
pub fn write_memtable(
    io: &dyn FileIo,
    dir: &Path,
    seg: u32,
    mem: &Memtable,
    hash_bits: u32,
    sync: bool,
) -> io::Result<Table> {
    let mut w = TableWriter::create(io, dir, seg, seg, hash_bits, sync)?;
    let tmp = w.tmp.clone();
    let written = mem
        .sorted()
        .into_iter()
        .try_for_each(|e| w.push(e))
        .and_then(|()| w.finish());
    if written.is_err() {
        // Give back the space (a full disk): the table is rebuilt on the next open.
        let _ = io.remove_file(&tmp);
    }
    written
}

/// Reads a table's pages in order, for merging.
struct Cursor<'t> {
    table: &'t Table,
    next_page: usize,
    buf: Vec<u8>,
    entries: Vec<KeyEntry>,
    at: usize,
}

impl Cursor<'_> {
    fn peek(&mut self) -> io::Result<Option<KeyEntry>> {
        while self.at == self.entries.len() {
            if self.next_page == self.table.fences.len() {
                return Ok(None);
            }
            let pages =
                (self.table.fences.len() - self.next_page).min(MERGE_READ_BYTES / PAGE_BYTES);
            self.entries.clear();
            self.at = 0;
            self.table.read_pages(
                self.next_page..self.next_page + pages,
                &mut self.buf,
                &mut self.entries,
            )?;
            self.next_page += pages;
        }
        Ok(Some(self.entries[self.at]))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Head(KeyEntry, usize);

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on the entry.
        other.0.cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Merges adjacent tables (in segment order) into one covering all their segments.
/// Stops (with an error, deleting its temporary file) once `stop` is set.
pub fn merge(
    io: &dyn FileIo,
    dir: &Path,
    tables: &[Arc<Table>],
    hash_bits: u32,
    sync: bool,
    stop: &AtomicBool,
) -> io::Result<Table> {
    let first = tables.first().map_or(0, |t| t.first_seg);
    let last = tables.last().map_or(0, |t| t.last_seg);
    let w = TableWriter::create(io, dir, first, last, hash_bits, sync)?;
    let tmp = w.tmp.clone();
    let merged = merge_into(w, tables, stop);
    if merged.is_err() {
        // Give back the space (a full disk, or the store closing): reads keep the inputs.
        let _ = io.remove_file(&tmp);
    }
    merged
}

fn merge_into(
    mut w: TableWriter<'_>,
    tables: &[Arc<Table>],
    stop: &AtomicBool,
) -> io::Result<Table> {
    let mut cursors: Vec<Cursor<'_>> = tables
        .iter()
        .map(|t| Cursor {
            table: t,
            next_page: 0,
            buf: Vec::new(),
            entries: Vec::new(),
            at: 0,
        })
        .collect();
    let mut heap = BinaryHeap::new();
    for (i, c) in cursors.iter_mut().enumerate() {
        if let Some(e) = c.peek()? {
            heap.push(Head(e, i));
        }
    }
    // The smallest head is replaced in place by its table's next entry (one sift down), or
    // popped when that table is done.
    while let Some(mut top) = heap.peek_mut() {
        if w.entries.is_multiple_of(1 << 16) && stop.load(AtomicOrdering::Relaxed) {
            return Err(io::Error::other("merge stopped: the store is closing"));
        }
        let Head(e, i) = *top;
        w.push(e)?;
        cursors[i].at += 1;
        match cursors[i].peek()? {
            Some(n) => *top = Head(n, i),
            None => {
                std::collections::binary_heap::PeekMut::pop(top);
            }
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u64) -> Vec<KeyEntry> {
        let mut v: Vec<KeyEntry> = (0..n)
            .map(|i| KeyEntry {
                key: i % 7,
                ordinal: i,
                addr: i * 10,
            })
            .collect();
        v.sort_unstable();
        v
    }

    fn write(dir: &Path, seg: u32, es: &[KeyEntry]) -> Table {
        write_version(dir, seg, es, TABLE_VERSION)
    }

    fn write_version(dir: &Path, seg: u32, es: &[KeyEntry], version: u32) -> Table {
        let mut w =
            TableWriter::create(&crate::io::OsIo, dir, seg, seg, 62, false).expect("create");
        w.version = version;
        for &e in es {
            w.push(e).expect("push");
        }
        w.finish().expect("finish")
    }

    /// Entries of three streams, each in two runs of revisions far apart, and of a category.
    fn stream_entries() -> Vec<KeyEntry> {
        let stream = |k: u64| (NS_STREAM << 62) | k;
        let mut es = Vec::new();
        for k in 1..=3 {
            for r in (0..100).chain(1000 + k * 10..1300) {
                es.push(KeyEntry {
                    key: stream(k),
                    ordinal: r,
                    addr: (k << 32) | r,
                });
                es.push(KeyEntry {
                    key: (NS_CATEGORY << 62) | 7,
                    ordinal: (k << 32) | r,
                    addr: (k << 32) | r,
                });
            }
        }
        es.sort_unstable();
        es
    }

    #[test]
    fn both_versions_answer_every_range_alike() {
        let dir = tempfile::tempdir().expect("tempdir");
        let es = stream_entries();
        let v1 = write_version(dir.path(), 0, &es, 1);
        let v2 = write_version(dir.path(), 1, &es, 2);
        assert!(!Table::open(&v1.path, 62).expect("v1 opens").buckets);
        assert!(Table::open(&v2.path, 62).expect("v2 opens").buckets);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2000 {
            let key = match next(5) {
                0 => (NS_CATEGORY << 62) | 7,
                k => (NS_STREAM << 62) | k,
            };
            let lo = next(1400);
            let hi = if next(10) == 0 {
                u64::MAX
            } else {
                lo + next(300)
            };
            let (limit, reverse) = (1 + next(400) as usize, next(2) == 0);
            let q = Query {
                key,
                lo,
                hi,
                limit,
                reverse,
            };
            let mut want: Vec<(u64, u64)> = es
                .iter()
                .filter(|e| e.key == key && (lo..=hi).contains(&e.ordinal))
                .map(|e| (e.ordinal, e.addr))
                .collect();
            if reverse {
                want.reverse();
            }
            want.truncate(limit);
            for t in [&v1, &v2] {
                let mut out = Vec::new();
                t.query(&q, &mut out).expect("query");
                assert_eq!(out, want, "{q:?}");
            }
        }
    }

    #[test]
    fn a_stream_read_skips_a_table_without_its_revisions_reading_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let es = stream_entries();
        let tables: Vec<PathBuf> = [1, 2]
            .into_iter()
            .map(|v| write_version(dir.path(), v, &es, v).path)
            .collect();
        // Damage every page: a query that reads one fails.
        for path in &tables {
            let mut bytes = std::fs::read(path).expect("read");
            let pages = Table::open(path, 62).expect("open").fences.len();
            for p in 0..pages {
                bytes[p * PAGE_BYTES + 10] ^= 1;
            }
            std::fs::write(path, bytes).expect("write");
        }
        let (v1, v2) = (
            Table::open(&tables[0], 62).expect("fences are intact"),
            Table::open(&tables[1], 62).expect("fences are intact"),
        );
        let ask = |t: &Table, key: u64, lo: u64, hi: u64| {
            t.query(
                &Query {
                    key,
                    lo,
                    hi,
                    limit: usize::MAX,
                    reverse: false,
                },
                &mut Vec::new(),
            )
        };
        let stream = (NS_STREAM << 62) | 2;
        // Revisions 300..=799 of stream 2 are in no bucket of this table: version 2 skips it
        // by its bloom filter; version 1 knows only that the stream is there.
        assert!(ask(&v2, stream, 300, 399).is_ok());
        assert!(ask(&v2, stream, 128, 991).is_ok());
        assert!(ask(&v1, stream, 300, 399).is_err());
        // What the table holds is read (and the damage found).
        assert!(ask(&v2, stream, 50, 60).is_err());
        assert!(ask(&v2, stream, 990, 1050).is_err());
        // Ranges of more buckets than are asked, and other namespaces, read as version 1 does.
        assert!(ask(&v2, stream, 300, 300 + 64 * 32).is_err());
        assert!(ask(&v2, (NS_CATEGORY << 62) | 7, 0, u64::MAX).is_err());
        // A stream the table does not hold is skipped by either.
        assert!(ask(&v1, (NS_STREAM << 62) | 9, 0, u64::MAX).is_ok());
        assert!(ask(&v2, (NS_STREAM << 62) | 9, 0, u64::MAX).is_ok());
    }

    #[test]
    fn a_table_answers_ranges_forward_and_backward_across_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let es = entries(5000);
        let t = write(dir.path(), 3, &es);
        assert_eq!(t.entries, 5000);
        assert!(t.fences.len() > 20);
        let q = |lo, hi, limit, reverse| {
            let mut out = Vec::new();
            t.query(
                &Query {
                    key: 3,
                    lo,
                    hi,
                    limit,
                    reverse,
                },
                &mut out,
            )
            .expect("query");
            out.iter().map(|&(o, _)| o).collect::<Vec<_>>()
        };
        let all: Vec<u64> = (0..5000).filter(|i| i % 7 == 3).collect();
        assert_eq!(q(0, u64::MAX, usize::MAX, false), all);
        let mid: Vec<u64> = all
            .iter()
            .copied()
            .filter(|&o| (1000..=3000).contains(&o))
            .collect();
        assert_eq!(q(1000, 3000, usize::MAX, false), mid);
        assert_eq!(q(1000, 3000, 5, false), mid[..5].to_vec());
        let rev: Vec<u64> = mid.iter().rev().take(5).copied().collect();
        assert_eq!(q(1000, 3000, 5, true), rev);
        assert!(q(5000, u64::MAX, 10, false).is_empty());
    }

    #[test]
    fn merging_keeps_every_entry_in_order_and_a_damaged_page_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let all = entries(3000);
        // Four tables (a merge's fan-out): one of the first 1,700 ordinals, and the rest
        // dealt over three, so every key's entries interleave across them.
        let (a, rest): (Vec<KeyEntry>, Vec<KeyEntry>) = all.iter().partition(|e| e.ordinal < 1700);
        let mut tables = vec![Arc::new(write(dir.path(), 0, &a))];
        for t in 0..3u64 {
            let part: Vec<KeyEntry> = rest
                .iter()
                .copied()
                .filter(|e| e.ordinal % 3 == t)
                .collect();
            tables.push(Arc::new(write(dir.path(), 1 + t as u32, &part)));
        }
        let m = merge(
            &crate::io::OsIo,
            dir.path(),
            &tables,
            62,
            false,
            &AtomicBool::new(false),
        )
        .expect("merge");
        assert_eq!((m.first_seg, m.last_seg, m.entries), (0, 3, 3000));
        let mut out = Vec::new();
        for k in 0..7 {
            m.query(
                &Query {
                    key: k,
                    lo: 0,
                    hi: u64::MAX,
                    limit: usize::MAX,
                    reverse: false,
                },
                &mut out,
            )
            .expect("query");
        }
        let want: Vec<(u64, u64)> = all.iter().map(|e| (e.ordinal, e.addr)).collect();
        assert_eq!(out, want);
        // Flip a byte in page 0: the read fails instead of answering wrong addresses.
        let path = m.path.clone();
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[100] ^= 1;
        std::fs::write(&path, bytes).expect("write");
        let m = Table::open(&path, 62).expect("fences are intact");
        let err = m
            .query(
                &Query {
                    key: 0,
                    lo: 0,
                    hi: u64::MAX,
                    limit: 10,
                    reverse: false,
                },
                &mut Vec::new(),
            )
            .expect_err("page 0 is damaged");
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(
            Table::open(&path, 61).is_err(),
            "another hash width is refused"
        );
    }

    #[test]
    fn colliding_entries_equal_in_key_and_ordinal_are_all_found_across_pages() {
        // 500 entries (key 9, ordinal 0) of different names: three pages start alike.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut es: Vec<KeyEntry> = (0..500)
            .map(|a| KeyEntry {
                key: 9,
                ordinal: 0,
                addr: a,
            })
            .chain((0..400).map(|a| KeyEntry {
                key: 8,
                ordinal: a,
                addr: a,
            }))
            .collect();
        es.sort_unstable();
        let t = write(dir.path(), 0, &es);
        let mut out = Vec::new();
        let q = Query {
            key: 9,
            lo: 0,
            hi: 0,
            limit: usize::MAX,
            reverse: false,
        };
        t.query(&q, &mut out).expect("query");
        assert_eq!(out.len(), 500);
        out.clear();
        t.query(&Query { reverse: true, ..q }, &mut out)
            .expect("query");
        assert_eq!(out.len(), 500);
        // The memtable keeps colliding names' entries sorted whatever their arrival order.
        let mut m = Memtable::default();
        for (o, a) in [(5, 50), (0, 60), (6, 70), (1, 80)] {
            m.add(3, o, a);
        }
        let mut got = Vec::new();
        m.query(
            &Query {
                key: 3,
                lo: 1,
                hi: 5,
                limit: usize::MAX,
                reverse: false,
            },
            &mut got,
        );
        assert_eq!(got, vec![(1, 80), (5, 50)]);
    }

    #[test]
    fn keys_keep_their_namespace_whatever_the_hash_width() {
        assert_ne!(key(NS_STREAM, "a", 0), key(NS_CATEGORY, "a", 0));
        assert_eq!(key(NS_STREAM, "a", 0), key(NS_STREAM, "b", 0));
        assert_ne!(key(NS_STREAM, "a", 62), key(NS_STREAM, "b", 62));
        assert_eq!(
            parse_table_file_name(&table_file_name(4, 19)),
            Some((4, 19))
        );
    }
}
