//! Index checkpoints: one `NNNNNNNNNN.idx` file per sealed segment, holding what the in-memory
//! indexes need of each record (no payloads). Reopening loads these instead of rescanning the
//! sealed segments. They are derived data: a missing or damaged one is rebuilt from its segment.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::format::Kind;
use crate::index::Summary;
use crate::io::FileIo;
use crate::segment::{index_file_name, write_atomically};

const INDEX_MAGIC: &[u8; 8] = b"EVFLDIDX";
const INDEX_VERSION: u32 = 1;
const ENTRY_BYTES: usize = 30;
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
}

impl SegIndex {
    pub fn new(segment_no: u32) -> Self {
        SegIndex {
            segment_no,
            ..SegIndex::default()
        }
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
    if r.u32()? != INDEX_VERSION {
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
        let s = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
}
