//! Index checkpoints: one `NNNNNNNNNN.idx` file per sealed segment, holding what the in-memory
//! indexes need of each record (no payloads). Reopening loads these instead of rescanning the
//! sealed segments. They are derived data: a missing or damaged one is rebuilt from its segment.
//!
//! Version 2 also keeps the first event id of each stream's last append in the segment, so that
//! after a reopen the writer can tell a new append from a retry of that one without reading the
//! log (see `FORMAT.md`, "Index checkpoints").

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::format::{FLAG_TX_END, Kind};
use crate::index::Summary;
use crate::io::FileIo;
use crate::segment::{index_file_name, write_atomically};

const INDEX_MAGIC: &[u8; 8] = b"EVFLDIDX";
const INDEX_VERSION: u32 = 2;
/// The version before the appends' first ids: read as it is (the ids unknown).
const INDEX_VERSION_NO_IDS: u32 = 1;
const ENTRY_BYTES: usize = 30;
/// An entry of the first-id list: u32 entry index + 16 bytes of id.
const FIRST_ID_BYTES: usize = 20;
const NO_TYPE: u32 = u32::MAX;

/// One record, as checkpointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub position: u64,
    pub offset: u32,
    pub kind: u8,
    pub flags: u8,
    /// Index into the string table.
    pub stream: u32,
    /// Index into the string table, or `u32::MAX` for system records.
    pub event_type: u32,
    pub revision: u64,
}

/// The checkpoint of one segment, being built or loaded.
#[derive(Debug, Default, Clone)]
pub struct SegIndex {
    pub segment_no: u32,
    pub strings: Vec<Arc<str>>,
    lookup: HashMap<Arc<str>, u32>,
    pub entries: Vec<Entry>,
    /// Offset just past the segment's last record.
    pub end_offset: u64,
    /// Per stream (string index): the entry that begins the stream's last append in this
    /// segment and that append's first event id, when known.
    last_appends: Vec<Option<(u32, [u8; 16])>>,
}

impl SegIndex {
    pub fn new(segment_no: u32) -> Self {
        SegIndex {
            segment_no,
            ..SegIndex::default()
        }
    }

    /// The first event ids of the streams' last appends in this segment, as (entry index, id)
    /// in entry order: what version 2 stores.
    pub fn first_ids(&self) -> Vec<(u32, [u8; 16])> {
        let mut out: Vec<(u32, [u8; 16])> = self.last_appends.iter().flatten().copied().collect();
        out.sort_unstable_by_key(|&(entry, _)| entry);
        out
    }

    /// The string table index of `s`, added if new.
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.lookup.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        let a: Arc<str> = Arc::from(s);
        self.strings.push(a.clone());
        self.lookup.insert(a, i);
        i
    }

    /// Adds a record that ends at `end_offset`.
    pub fn add(&mut self, s: &Summary<'_>, end_offset: u64) {
        let stream = self.intern(s.stream);
        let event_type = if s.kind == Kind::Event {
            self.intern(s.event_type)
        } else {
            NO_TYPE
        };
        self.add_interned(s, stream, event_type, end_offset);
    }

    /// [`SegIndex::add`] with the stream and (for events) type already interned by the caller
    /// ([`SegIndex::intern`]), which may reuse them across the records of one batch. `event_type`
    /// is ignored for system records.
    pub fn add_interned(&mut self, s: &Summary<'_>, stream: u32, event_type: u32, end_offset: u64) {
        debug_assert_eq!(&*self.strings[stream as usize], s.stream);
        let event_type = if s.kind == Kind::Event {
            debug_assert_eq!(&*self.strings[event_type as usize], s.event_type);
            event_type
        } else {
            NO_TYPE
        };
        // An event that begins a transaction (the segment's first record, or one after a
        // transaction's end) begins its stream's append, as `Index::apply` counts them: its
        // id, when the caller knows it, is that append's first id.
        let after_tx_end = self
            .entries
            .last()
            .is_none_or(|e| e.flags & FLAG_TX_END != 0);
        if s.kind == Kind::Event && after_tx_end {
            let at = stream as usize;
            if self.last_appends.len() <= at {
                self.last_appends.resize(at + 1, None);
            }
            self.last_appends[at] = s.id.map(|id| (self.entries.len() as u32, id));
        }
        self.entries.push(Entry {
            position: s.position,
            offset: (s.addr & 0xffff_ffff) as u32,
            kind: s.kind as u8,
            flags: s.flags,
            stream,
            event_type,
            revision: s.revision,
        });
        self.end_offset = end_offset;
    }

    pub fn kind(e: &Entry) -> Kind {
        match e.kind {
            1 => Kind::Event,
            2 => Kind::Metadata,
            3 => Kind::SoftDelete,
            _ => Kind::Tombstone,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(40 + self.entries.len() * ENTRY_BYTES + self.strings.len() * 24);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&self.segment_no.to_le_bytes());
        out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.end_offset.to_le_bytes());
        for s in &self.strings {
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        for e in &self.entries {
            out.extend_from_slice(&e.position.to_le_bytes());
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.push(e.kind);
            out.push(e.flags);
            out.extend_from_slice(&e.stream.to_le_bytes());
            out.extend_from_slice(&e.event_type.to_le_bytes());
            out.extend_from_slice(&e.revision.to_le_bytes());
        }
        let first_ids = self.first_ids();
        out.extend_from_slice(&(first_ids.len() as u32).to_le_bytes());
        for (entry, id) in first_ids {
            out.extend_from_slice(&entry.to_le_bytes());
            out.extend_from_slice(&id);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Writes the checkpoint atomically (temporary file, flush, rename).
    pub fn write(&self, io: &dyn FileIo, dir: &Path, sync: bool) -> io::Result<()> {
        write_atomically(
            io,
            dir,
            &index_file_name(self.segment_no),
            &self.encode(),
            sync,
        )?;
        Ok(())
    }

    /// Loads the checkpoint of segment `no`: `Ok(None)` when there is none, `Err` (with why)
    /// when it is damaged or does not belong to that segment.
    pub fn load(dir: &Path, no: u32) -> Result<Option<SegIndex>, String> {
        let bytes = match fs::read(dir.join(index_file_name(no))) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        decode(&bytes, no).map(Some)
    }
}

fn decode(b: &[u8], no: u32) -> Result<SegIndex, String> {
    if b.len() < 36 || &b[0..8] != INDEX_MAGIC {
        return Err("not an index checkpoint (bad magic)".into());
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader { b: body, at: 8 };
    let version = r.u32()?;
    if version != INDEX_VERSION && version != INDEX_VERSION_NO_IDS {
        return Err("unknown index version".into());
    }
    if r.u32()? != no {
        return Err("it belongs to another segment".into());
    }
    let string_count = r.u32()? as usize;
    let entry_count = r.u32()? as usize;
    let mut ix = SegIndex::new(no);
    ix.end_offset = r.u64()?;
    for _ in 0..string_count {
        let n = r.u16()? as usize;
        let s = std::str::from_utf8(r.take(n)?).map_err(|_| "string is not UTF-8".to_owned())?;
        ix.strings.push(Arc::from(s));
    }
    ix.entries.reserve_exact(entry_count);
    for _ in 0..entry_count {
        let e = Entry {
            position: r.u64()?,
            offset: r.u32()?,
            kind: r.take(1)?[0],
            flags: r.take(1)?[0],
            stream: r.u32()?,
            event_type: r.u32()?,
            revision: r.u64()?,
        };
        let strings = ix.strings.len() as u32;
        if e.stream >= strings
            || (e.event_type != NO_TYPE && e.event_type >= strings)
            || !(1..=4).contains(&e.kind)
        {
            return Err("entry refers to a string or kind that does not exist".into());
        }
        ix.entries.push(e);
    }
    if version == INDEX_VERSION {
        let count = r.u32()? as usize;
        if count.saturating_mul(FIRST_ID_BYTES) > body.len() - r.at {
            return Err("first-id count larger than the file".into());
        }
        ix.last_appends = vec![None; ix.strings.len()];
        let mut after = None;
        for _ in 0..count {
            let entry = r.u32()?;
            let id: [u8; 16] = r.array()?;
            let e = ix
                .entries
                .get(entry as usize)
                .filter(|e| SegIndex::kind(e) == Kind::Event)
                .ok_or("a first id names an entry that is not an event")?;
            let slot = &mut ix.last_appends[e.stream as usize];
            if after.is_some_and(|a| entry <= a) || slot.is_some() {
                return Err("first ids out of order, or two for one stream".into());
            }
            *slot = Some((entry, id));
            after = Some(entry);
        }
    }
    if r.at != body.len() {
        return Err("trailing bytes".into());
    }
    Ok(ix)
}

/// Little-endian fields read off a byte slice, each refused when the slice is too short (shared
/// by the checkpoint and snapshot decoders).
pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or_else(|| "truncated".to_owned())?;
        self.at += n;
        Ok(s)
    }
    pub(crate) fn u16(&mut self) -> Result<u16, String> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }
    /// The next `N` bytes (an event id: 16).
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary<'a>(
        stream: &'a str,
        position: u64,
        revision: u64,
        tx_end: bool,
        id: Option<[u8; 16]>,
    ) -> Summary<'a> {
        Summary {
            kind: Kind::Event,
            flags: if tx_end { FLAG_TX_END } else { 0 },
            stream,
            event_type: "t",
            position,
            revision,
            addr: 32 + position * 100,
            id,
        }
    }

    /// a: an append of two events (id 1), b: one event (id 2), a: one event (id 3),
    /// c: one event whose id the caller did not know, b: a metadata record.
    fn sample() -> SegIndex {
        let mut ix = SegIndex::new(7);
        for (i, s) in [
            summary("a", 0, 0, false, Some([1; 16])),
            summary("a", 1, 1, true, Some([9; 16])),
            summary("b", 2, 0, true, Some([2; 16])),
            summary("a", 3, 2, true, Some([3; 16])),
            summary("c", 4, 0, true, None),
        ]
        .iter()
        .enumerate()
        {
            ix.add(s, 100 + i as u64);
        }
        ix.add(
            &Summary {
                kind: Kind::Metadata,
                ..summary("b", 5, 0, true, Some([4; 16]))
            },
            200,
        );
        ix
    }

    #[test]
    fn each_streams_last_append_keeps_its_first_id_across_a_round_trip() {
        let ix = sample();
        // a's last append starts at entry 3, b's at entry 2 (a metadata record begins no
        // append); c's id was not known.
        assert_eq!(ix.first_ids(), vec![(2, [2; 16]), (3, [3; 16])]);
        let back = decode(&ix.encode(), 7).expect("decode");
        assert_eq!(back.entries, ix.entries);
        assert_eq!(back.strings, ix.strings);
        assert_eq!(back.end_offset, 200);
        assert_eq!(back.first_ids(), ix.first_ids());
    }

    /// Version 1 (no first ids) as the builds before wrote it.
    fn as_version_1(ix: &SegIndex) -> Vec<u8> {
        let mut b = ix.encode();
        b.truncate(b.len() - 4);
        let ids = ix.first_ids().len();
        b.truncate(b.len() - 4 - ids * FIRST_ID_BYTES);
        b[8..12].copy_from_slice(&INDEX_VERSION_NO_IDS.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn a_version_1_checkpoint_is_read_without_first_ids() {
        let ix = sample();
        let back = decode(&as_version_1(&ix), 7).expect("decode version 1");
        assert_eq!(back.entries, ix.entries);
        assert!(back.first_ids().is_empty());
    }

    #[test]
    fn first_ids_that_name_no_event_or_repeat_a_stream_are_refused() {
        let ix = sample();
        let with = |ids: &[(u32, [u8; 16])]| {
            let mut b = as_version_1(&ix);
            b.truncate(b.len() - 4);
            b[8..12].copy_from_slice(&INDEX_VERSION.to_le_bytes());
            b.extend_from_slice(&(ids.len() as u32).to_le_bytes());
            for (entry, id) in ids {
                b.extend_from_slice(&entry.to_le_bytes());
                b.extend_from_slice(id);
            }
            let crc = crc32c::crc32c(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            decode(&b, 7)
        };
        assert!(with(&[(2, [2; 16]), (3, [3; 16])]).is_ok());
        for bad in [
            vec![(5, [4; 16])],               // a metadata record
            vec![(6, [4; 16])],               // past the entries
            vec![(3, [3; 16]), (2, [2; 16])], // out of order
            vec![(0, [1; 16]), (3, [3; 16])], // two for stream a
            vec![(2, [2; 16]), (2, [2; 16])], // the same entry twice
        ] {
            assert!(with(&bad).is_err(), "{bad:?}");
        }
        // A count the file cannot hold is refused before anything is reserved.
        let mut b = as_version_1(&ix);
        b.truncate(b.len() - 4);
        b[8..12].copy_from_slice(&INDEX_VERSION.to_le_bytes());
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        assert!(decode(&b, 7).is_err());
    }
}
