//! The byte layout of segment files and records. `FORMAT.md` beside this crate is the prose
//! version of this file; change both in the same commit.

/// Hash maps keyed by names read from the log: foldhash (fast, seeded per process).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use eventfold_core::{
    ContentType, EventId, EventType, Metadata, Position, RecordedEvent, Revision, StreamName, Tag,
    Tags, Timestamp,
};

/// The highest segment format version this build reads (see `FORMAT.md`, "Versions").
pub const FORMAT_VERSION: u32 = TAGGED_COMPACTED_SEGMENT_VERSION;
/// The format version of segments the writer wrote before tags: records contiguous from the
/// segment's first position, none with tags. Still read.
pub const LOG_SEGMENT_VERSION_1: u32 = 1;
/// The format version of a version 1 segment rewritten by a scavenge: its records with gaps,
/// and the header names the positions the segment spans.
pub const COMPACTED_SEGMENT_VERSION: u32 = 2;
/// The format version of segments the writer writes: version 1's layout whose records may
/// carry tags ([`FLAG_TAGS`]).
pub const LOG_SEGMENT_VERSION: u32 = 3;
/// The format version of a version 3 segment rewritten by a scavenge: version 2's header, and
/// records that may carry tags.
pub const TAGGED_COMPACTED_SEGMENT_VERSION: u32 = 4;
/// Magic bytes opening every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"EVFLDSEG";
/// Bytes of the segment header; records start right after it.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// Bytes before a record's body: length (u32) and CRC32C (u32).
pub const FRAME_HEADER_BYTES: usize = 8;
/// Bytes of the fixed part of a record body.
pub const BODY_FIXED_BYTES: usize = 60;
/// The writer never has more than this many bytes written but not yet flushed. Recovery relies
/// on it: a bad record followed by non-zero bytes further than this away cannot be a torn tail.
pub const UNSYNCED_BYTES_MAX: u64 = 32 << 20;

/// Record flag: the last record of its transaction (one append, metadata change or delete).
pub const FLAG_TX_END: u8 = 1;
/// Record flag: the body ends with a tags section (events only; only in segments of version
/// 3 or 4, which an eventfold from before tags refuses as newer instead of misreading).
pub const FLAG_TAGS: u8 = 2;
/// Bytes the tags section adds beyond the tags' own bytes: a count, and a length per tag.
pub const TAGS_SECTION_OVERHEAD_MAX: usize = 1 + eventfold_core::TAGS_PER_EVENT_MAX;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A user event.
    Event = 1,
    /// The stream's new metadata (data = metadata JSON).
    Metadata = 2,
    /// Soft delete: revisions up to and including `revision` are deleted.
    SoftDelete = 3,
    /// Hard delete: the stream is gone forever.
    Tombstone = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Event,
            2 => Kind::Metadata,
            3 => Kind::SoftDelete,
            4 => Kind::Tombstone,
            _ => return None,
        })
    }

    /// The type name written in system records, for people reading a dump.
    pub fn system_type(self) -> &'static str {
        match self {
            Kind::Event => "",
            Kind::Metadata => "$metadata",
            Kind::SoftDelete => "$deleted",
            Kind::Tombstone => "$tombstone",
        }
    }
}

/// Revision written in delete records of a stream that had no event.
pub const NO_REVISION: u64 = u64::MAX;

/// A record to encode.
#[derive(Debug)]
pub struct RecordOut<'a> {
    pub kind: Kind,
    pub flags: u8,
    pub stream: &'a str,
    pub event_type: &'a str,
    pub content_type: &'a str,
    pub position: u64,
    pub revision: u64,
    pub timestamp_us: i64,
    pub id: [u8; 16],
    pub schema_version: u32,
    pub metadata: &'a [u8],
    pub data: &'a [u8],
    /// The event's tags section as [`encode_tags`] writes it (empty: no tags); written, with
    /// [`FLAG_TAGS`] set, only when not empty.
    pub tags: &'a [u8],
}

/// Writes the tags section of `tags` into `out` (nothing for no tags): a count, then each tag
/// as a length byte and its UTF-8 bytes.
pub fn encode_tags(tags: &[Tag], out: &mut Vec<u8>) {
    if tags.is_empty() {
        return;
    }
    // Bounds the types guarantee: at most 32 tags of at most 128 bytes each.
    out.push(tags.len() as u8);
    for t in tags {
        out.push(t.as_str().len() as u8);
        out.extend_from_slice(t.as_str().as_bytes());
    }
}

impl RecordOut<'_> {
    /// Bytes the record takes in the log, frame header included.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_BYTES
            + BODY_FIXED_BYTES
            + self.stream.len()
            + self.event_type.len()
            + self.content_type.len()
            + self.metadata.len()
            + self.data.len()
            + self.tags.len()
    }

    /// Appends the framed record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let body_len = self.encoded_len() - FRAME_HEADER_BYTES;
        out.extend_from_slice(&(body_len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]); // CRC, filled below
        out.push(self.kind as u8);
        let flags = if self.tags.is_empty() {
            self.flags & !FLAG_TAGS
        } else {
            self.flags | FLAG_TAGS
        };
        out.push(flags);
        out.extend_from_slice(&(self.stream.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.event_type.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.content_type.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.revision.to_le_bytes());
        out.extend_from_slice(&self.timestamp_us.to_le_bytes());
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.schema_version.to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        out.extend_from_slice(self.stream.as_bytes());
        out.extend_from_slice(self.event_type.as_bytes());
        out.extend_from_slice(self.content_type.as_bytes());
        out.extend_from_slice(self.metadata);
        out.extend_from_slice(self.data);
        out.extend_from_slice(self.tags);
        let crc = crc32c::crc32c(&out[start + FRAME_HEADER_BYTES..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A decoded record, borrowing from the buffer it was read from.
#[derive(Debug, Clone, Copy)]
pub struct RecordIn<'a> {
    pub kind: Kind,
    pub flags: u8,
    pub stream: &'a str,
    pub event_type: &'a str,
    pub content_type: &'a str,
    pub position: u64,
    pub revision: u64,
    pub timestamp_us: i64,
    pub id: [u8; 16],
    pub schema_version: u32,
    pub metadata: &'a [u8],
    pub data: &'a [u8],
    /// The tags section as stored (empty: no tags), checked by [`decode`]: a count, then each
    /// tag as a length byte and UTF-8 bytes.
    pub tags: &'a [u8],
}

/// The tags of a tags section that [`decode`] checked.
#[derive(Debug, Clone)]
pub struct TagIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for TagIter<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let (&n, rest) = self.rest.split_first()?;
        let n = usize::from(n).min(rest.len());
        let (tag, rest) = rest.split_at(n);
        self.rest = rest;
        // Checked UTF-8 by `decode`; a record that was not decoded yields nothing more.
        std::str::from_utf8(tag).ok()
    }
}

/// Checks a tags section (after the flag said there is one): the count, each length, UTF-8.
fn check_tags(section: &[u8]) -> Result<(), FrameError> {
    let Some((&count, mut rest)) = section.split_first() else {
        return Err(FrameError::Malformed("tags flag set but no tags section"));
    };
    if count == 0 {
        return Err(FrameError::Malformed("tags section with no tag"));
    }
    for _ in 0..count {
        let Some((&n, r)) = rest.split_first() else {
            return Err(FrameError::Malformed("tags section shorter than its count"));
        };
        let n = usize::from(n);
        if n == 0 || n > r.len() {
            return Err(FrameError::Malformed("tag length out of range"));
        }
        std::str::from_utf8(&r[..n]).map_err(|_| FrameError::Malformed("tag is not UTF-8"))?;
        rest = &r[n..];
    }
    if !rest.is_empty() {
        return Err(FrameError::Malformed(
            "bytes after the tags section's last tag",
        ));
    }
    Ok(())
}

impl<'a> RecordIn<'a> {
    /// Bytes the record takes in the log, frame header included.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_BYTES
            + BODY_FIXED_BYTES
            + self.stream.len()
            + self.event_type.len()
            + self.content_type.len()
            + self.metadata.len()
            + self.data.len()
            + self.tags.len()
    }

    /// The record's tags, in the order stored.
    pub fn tags(&self) -> TagIter<'a> {
        TagIter {
            rest: self.tags.get(1..).unwrap_or(&[]),
        }
    }

    /// Whether the record carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags().any(|t| t == tag)
    }
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A zero length: the end of the written part of a preallocated segment.
    End,
    /// The frame claims more bytes than there are (`needed` in all, from the frame start).
    Short { needed: usize },
    /// The body does not match its checksum.
    Checksum,
    /// The checksum matches but the body breaks the format's rules.
    Malformed(&'static str),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::End => f.write_str("end of data"),
            FrameError::Short { needed } => write!(
                f,
                "record of {needed} bytes runs past the end of the segment"
            ),
            FrameError::Checksum => f.write_str("CRC32C checksum mismatch"),
            FrameError::Malformed(why) => write!(f, "malformed record ({why})"),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The total framed length announced by the frame at the start of `buf`, if its header is there.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= FRAME_HEADER_BYTES).then(|| FRAME_HEADER_BYTES + u32_at(buf, 0) as usize)
}

/// Decodes the record at the start of `buf`, checking its checksum and structure. Returns the
/// record and its framed length. Inlined into the scans: the record (144 bytes) is then built
/// where the scan uses it instead of copied out of a returned `Result` (reads of `$all` 6-11%
/// faster, BENCHMARKS.md, issue 12's third session of 2026-12-06).
#[inline]
pub fn decode(buf: &[u8]) -> Result<(RecordIn<'_>, usize), FrameError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return if buf.iter().all(|&b| b == 0) {
            Err(FrameError::End)
        } else {
            Err(FrameError::Short {
                needed: FRAME_HEADER_BYTES,
            })
        };
    }
    let body_len = u32_at(buf, 0) as usize;
    if body_len == 0 {
        return Err(FrameError::End);
    }
    let total = FRAME_HEADER_BYTES + body_len;
    if buf.len() < total {
        return Err(FrameError::Short { needed: total });
    }
    let body = &buf[FRAME_HEADER_BYTES..total];
    if crc32c::crc32c(body) != u32_at(buf, 4) {
        return Err(FrameError::Checksum);
    }
    if body_len < BODY_FIXED_BYTES {
        return Err(FrameError::Malformed("body shorter than its fixed part"));
    }
    let kind = Kind::from_u8(body[0]).ok_or(FrameError::Malformed("unknown record kind"))?;
    let (sl, tl, cl) = (u16_at(body, 2), u16_at(body, 4), u16_at(body, 6));
    let (ml, dl) = (u32_at(body, 52) as usize, u32_at(body, 56) as usize);
    let fields = BODY_FIXED_BYTES + sl + tl + cl + ml + dl;
    let has_tags = body[1] & FLAG_TAGS != 0;
    if fields > body_len || (fields != body_len && !has_tags) {
        return Err(FrameError::Malformed(
            "field lengths do not add up to the body length",
        ));
    }
    let tags = &body[fields..];
    if has_tags {
        if kind != Kind::Event {
            return Err(FrameError::Malformed("a system record with tags"));
        }
        check_tags(tags)?;
    }
    let mut at = BODY_FIXED_BYTES;
    let mut take = |n: usize| {
        let s = &body[at..at + n];
        at += n;
        s
    };
    // The three names lie side by side: one UTF-8 check of the run (a check per name cost a
    // read of `$all` 7% of its time), then each cut must fall on a character boundary.
    let names = std::str::from_utf8(take(sl + tl + cl))
        .map_err(|_| FrameError::Malformed("a stream, type or content type is not UTF-8"))?;
    let (stream, rest) = names
        .split_at_checked(sl)
        .ok_or(FrameError::Malformed("stream name is not UTF-8"))?;
    let (event_type, content_type) = rest
        .split_at_checked(tl)
        .ok_or(FrameError::Malformed("event type is not UTF-8"))?;
    let metadata = take(ml);
    let data = take(dl);
    let mut id = [0; 16];
    id.copy_from_slice(&body[32..48]);
    Ok((
        RecordIn {
            kind,
            flags: body[1],
            stream,
            event_type,
            content_type,
            position: u64_at(body, 8),
            revision: u64_at(body, 16),
            timestamp_us: u64_at(body, 24) as i64,
            id,
            schema_version: u32_at(body, 48),
            metadata,
            data,
            tags,
        },
        total,
    ))
}

impl RecordIn<'_> {
    /// The record as a user event. `None` if a stored value no longer validates (which the
    /// writer never produces; treated as corruption by callers).
    #[inline]
    pub fn to_event(self, names: &mut NameCache) -> Option<RecordedEvent> {
        // Kept as the stored text and parsed only if a reader looks at it: the writer stored
        // a validated object (compact, as serde_json writes a map) and the record's CRC held.
        let metadata = match self.metadata {
            [] => Metadata::new(),
            [b'{', ..] => Metadata::from_raw_json(std::str::from_utf8(self.metadata).ok()?),
            _ => return None,
        };
        Some(RecordedEvent {
            id: EventId::from_bytes(self.id),
            stream: NameCache::get(
                &mut names.streams,
                &mut names.last_stream,
                self.stream,
                StreamName::as_str,
                |n| StreamName::new(n),
            )?,
            event_type: NameCache::get(
                &mut names.types,
                &mut names.last_type,
                self.event_type,
                EventType::as_str,
                |n| EventType::new(n),
            )?,
            revision: Revision(self.revision),
            position: Position(self.position),
            timestamp: Timestamp(self.timestamp_us),
            schema_version: self.schema_version,
            content_type: NameCache::get(
                &mut names.content_types,
                &mut names.last_content_type,
                self.content_type,
                ContentType::as_str,
                |n| ContentType::new(n),
            )?,
            data: self.data.to_vec(),
            metadata,
            tags: if self.tags.is_empty() {
                Tags::none()
            } else {
                Tags::new(
                    self.tags()
                        .map(Tag::new)
                        .collect::<Result<Vec<_>, _>>()
                        .ok()?,
                )
                .ok()?
            },
        })
    }
}

/// The validated names of one read's events, shared between them: the names are `Arc<str>`
/// inside, so a page of events of a few streams and types validates and allocates each name
/// once, not once per event. Lives for one read (bounded by its page).
#[derive(Debug, Default)]
pub struct NameCache {
    streams: HashMap<Box<str>, StreamName>,
    types: HashMap<Box<str>, EventType>,
    content_types: HashMap<Box<str>, ContentType>,
    /// The previous event's names: consecutive events of a page mostly share them (a batch is
    /// contiguous in the log), and comparing with the last one costs less than hashing.
    last_stream: Option<StreamName>,
    last_type: Option<EventType>,
    last_content_type: Option<ContentType>,
}

impl NameCache {
    fn get<T: Clone, E>(
        map: &mut HashMap<Box<str>, T>,
        last: &mut Option<T>,
        key: &str,
        as_str: fn(&T) -> &str,
        make: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        if let Some(v) = last
            && as_str(v) == key
        {
            return Some(v.clone());
        }
        let v = match map.get(key) {
            Some(v) => v.clone(),
            None => {
                let v = make(key).ok()?;
                map.insert(key.into(), v.clone());
                v
            }
        };
        *last = Some(v.clone());
        Some(v)
    }
}

/// The segment header the writer writes: magic, format version ([`LOG_SEGMENT_VERSION`]),
/// segment number, CRC32C of the preceding bytes.
pub fn encode_segment_header(segment_no: u32) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    header_start(LOG_SEGMENT_VERSION, segment_no)
}

/// The header of a compacted segment (version 2, or 4 when its records may carry tags):
/// version 1's first 20 bytes, then the positions the segment spans (its first record's
/// before any scavenge, and one past its last) and a CRC32C of bytes 0..36.
pub fn encode_compacted_header(
    segment_no: u32,
    positions: std::ops::Range<u64>,
    tags: bool,
) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let version = if tags {
        TAGGED_COMPACTED_SEGMENT_VERSION
    } else {
        COMPACTED_SEGMENT_VERSION
    };
    let mut h = header_start(version, segment_no);
    h[20..28].copy_from_slice(&positions.start.to_le_bytes());
    h[28..36].copy_from_slice(&positions.end.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..36]);
    h[36..40].copy_from_slice(&crc.to_le_bytes());
    h
}

fn header_start(version: u32, segment_no: u32) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&segment_no.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a segment header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment number.
    pub no: u32,
    /// For a compacted segment (version 2 or 4): the positions it spans, `first..end`. Its
    /// records lie in that range, in order, with gaps where a scavenge removed records; the
    /// next segment starts at `end`. `None` for a log segment (version 1 or 3): its records
    /// follow each other from the end of the segment before.
    pub compacted: Option<std::ops::Range<u64>>,
    /// Whether its records may carry tags (version 3 or 4): the writer writes a tagged
    /// record only into such a segment.
    pub tags: bool,
}

/// Why a segment header cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The header is damaged, or not an eventfold segment's: the data is corrupt.
    Damaged(String),
    /// An intact header of a format version above [`FORMAT_VERSION`]: written by a newer
    /// eventfold, not damaged.
    Newer {
        /// The version the header names.
        version: u32,
    },
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Damaged(why) => f.write_str(why),
            HeaderError::Newer { version } => write!(
                f,
                "written by a newer eventfold (format version {version}; this build reads up to version {FORMAT_VERSION}); upgrade eventfold to open it"
            ),
        }
    }
}

/// Checks a segment header; returns what it says.
///
/// Bytes 0..20 (magic, version, segment number, CRC32C of bytes 0..16) keep this layout in
/// every format version, so an intact header of a newer version is told apart from damage.
pub fn decode_segment_header(h: &[u8]) -> Result<SegmentHeader, HeaderError> {
    let damaged = |why: &str| Err(HeaderError::Damaged(why.into()));
    if h.len() < SEGMENT_HEADER_BYTES as usize {
        return damaged("file is shorter than a segment header");
    }
    if &h[0..8] != SEGMENT_MAGIC {
        return damaged("not an eventfold segment (bad magic bytes)");
    }
    if crc32c::crc32c(&h[0..16]) != u32_at(h, 16) {
        return damaged("segment header checksum mismatch");
    }
    let no = u32_at(h, 12);
    match u32_at(h, 8) {
        v @ (LOG_SEGMENT_VERSION_1 | LOG_SEGMENT_VERSION) => Ok(SegmentHeader {
            no,
            compacted: None,
            tags: v == LOG_SEGMENT_VERSION,
        }),
        v @ (COMPACTED_SEGMENT_VERSION | TAGGED_COMPACTED_SEGMENT_VERSION) => {
            if crc32c::crc32c(&h[0..36]) != u32_at(h, 36) {
                return damaged("compacted segment header checksum mismatch");
            }
            let (first, end) = (u64_at(h, 20), u64_at(h, 28));
            if first > end {
                return damaged(
                    "compacted segment header names positions that end before they start",
                );
            }
            Ok(SegmentHeader {
                no,
                compacted: Some(first..end),
                tags: v == TAGGED_COMPACTED_SEGMENT_VERSION,
            })
        }
        version if version > FORMAT_VERSION => Err(HeaderError::Newer { version }),
        version => Err(HeaderError::Damaged(format!(
            "format version {version} was never written by any eventfold (this build reads up to version {FORMAT_VERSION})"
        ))),
    }
}

/// A log address: segment number in the high 32 bits, byte offset in the low 32.
pub fn addr(segment_no: u32, offset: u64) -> u64 {
    (u64::from(segment_no) << 32) | offset
}

/// The parts of a log address.
pub fn split_addr(a: u64) -> (u32, u64) {
    ((a >> 32) as u32, a & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>() -> RecordOut<'a> {
        RecordOut {
            kind: Kind::Event,
            flags: FLAG_TX_END,
            stream: "order-1",
            event_type: "order.placed",
            content_type: "application/json",
            position: 7,
            revision: 3,
            timestamp_us: 1_700_000_000_000_000,
            id: [9; 16],
            schema_version: 2,
            metadata: br#"{"a":1}"#,
            data: br#"{"x":true}"#,
            tags: &[],
        }
    }

    #[test]
    fn round_trips_and_detects_every_flipped_bit() {
        let r = sample();
        let mut buf = Vec::new();
        r.encode_into(&mut buf);
        assert_eq!(buf.len(), r.encoded_len());
        let (d, n) = decode(&buf).unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(
            (
                d.stream,
                d.event_type,
                d.position,
                d.revision,
                d.schema_version
            ),
            ("order-1", "order.placed", 7, 3, 2)
        );
        assert_eq!(
            (d.metadata, d.data, d.id, d.flags),
            (
                &br#"{"a":1}"#[..],
                &br#"{"x":true}"#[..],
                [9; 16],
                FLAG_TX_END
            )
        );
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad).is_err(), "flipped bit {bit} went unnoticed");
        }
        assert_eq!(
            decode(&buf[..buf.len() - 1]).unwrap_err(),
            FrameError::Short { needed: buf.len() }
        );
        assert_eq!(decode(&[0; 16]).unwrap_err(), FrameError::End);
    }

    /// The bytes of `sample()` in format version 1, computed apart from this encoder (by the
    /// layout in `FORMAT.md`). Frozen: if this test fails, the format changed; that needs a new
    /// `FORMAT_VERSION` and a reader of the old one, not a new literal here.
    const SAMPLE_V1_HEX: &str = concat!(
        "7000000036957d16",                 // body length 112, CRC32C of the body
        "0101",                             // kind 1 (event), flags: end of transaction
        "07000c001000",                     // stream, type and content type lengths: 7, 12, 16
        "0700000000000000",                 // position 7
        "0300000000000000",                 // revision 3
        "00401e18240a0600",                 // timestamp 1_700_000_000_000_000 µs
        "09090909090909090909090909090909", // event id
        "02000000",                         // schema version 2
        "07000000",                         // metadata length 7
        "0a000000",                         // data length 10
        "6f726465722d31",                   // "order-1"
        "6f726465722e706c61636564",         // "order.placed"
        "6170706c69636174696f6e2f6a736f6e", // "application/json"
        "7b2261223a317d",                   // {"a":1}
        "7b2278223a747275657d",             // {"x":true}
    );

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("the literal is hex"))
            .collect()
    }

    #[test]
    fn a_known_record_encodes_to_the_frozen_bytes_and_decodes_back() {
        let golden = unhex(SAMPLE_V1_HEX);
        let mut buf = Vec::new();
        sample().encode_into(&mut buf);
        assert_eq!(buf, golden, "the encoding of format version 1 changed");
        let (d, n) = decode(&golden).expect("the frozen bytes decode");
        assert_eq!(n, golden.len());
        let s = sample();
        assert_eq!(
            (d.kind, d.flags, d.stream, d.event_type, d.content_type),
            (s.kind, s.flags, s.stream, s.event_type, s.content_type)
        );
        assert_eq!(
            (
                d.position,
                d.revision,
                d.timestamp_us,
                d.id,
                d.schema_version
            ),
            (
                s.position,
                s.revision,
                s.timestamp_us,
                s.id,
                s.schema_version
            )
        );
        assert_eq!((d.metadata, d.data), (s.metadata, s.data));
    }

    #[test]
    fn the_segment_header_encodes_to_the_frozen_bytes() {
        // Version 1, as builds before tags wrote it: still read, no tags in it.
        let mut golden = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        golden[..20].copy_from_slice(&unhex(concat!(
            "4556464c44534547", // "EVFLDSEG"
            "01000000",         // format version 1
            "2a000000",         // segment 42
            "84d70e52",         // CRC32C of the 16 bytes before
        )));
        assert_eq!(
            decode_segment_header(&golden),
            Ok(SegmentHeader {
                no: 42,
                compacted: None,
                tags: false
            })
        );
        // Version 3, as the writer writes it now.
        let mut v3 = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        v3[..16].copy_from_slice(&unhex(concat!(
            "4556464c44534547", // "EVFLDSEG"
            "03000000",         // format version 3
            "2a000000",         // segment 42
        )));
        let crc = crc32c::crc32c(&v3[..16]);
        v3[16..20].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(encode_segment_header(42)[..], v3[..]);
        assert_eq!(
            decode_segment_header(&v3),
            Ok(SegmentHeader {
                no: 42,
                compacted: None,
                tags: true
            })
        );
    }

    /// The bytes of `sample()` with the tags `course:c1` and `s7`: the version 1 bytes with
    /// flag bit 1 set, the tags section after the data and the lengths and CRC to match.
    const SAMPLE_TAGGED_HEX: &str = concat!(
        "7e000000b5087eb3",                 // body length 126, CRC32C of the body
        "0103",                             // kind 1 (event), flags: end of transaction, tags
        "07000c001000",                     // stream, type and content type lengths: 7, 12, 16
        "0700000000000000",                 // position 7
        "0300000000000000",                 // revision 3
        "00401e18240a0600",                 // timestamp 1_700_000_000_000_000 µs
        "09090909090909090909090909090909", // event id
        "02000000",                         // schema version 2
        "07000000",                         // metadata length 7
        "0a000000",                         // data length 10
        "6f726465722d31",                   // "order-1"
        "6f726465722e706c61636564",         // "order.placed"
        "6170706c69636174696f6e2f6a736f6e", // "application/json"
        "7b2261223a317d",                   // {"a":1}
        "7b2278223a747275657d",             // {"x":true}
        "02",                               // 2 tags
        "09636f757273653a6331",             // 9, "course:c1"
        "027337",                           // 2, "s7"
    );

    #[test]
    fn a_tagged_record_encodes_to_the_frozen_bytes_and_decodes_back() {
        let tags = [Tag::new("course:c1").unwrap(), Tag::new("s7").unwrap()];
        let mut section = Vec::new();
        encode_tags(&tags, &mut section);
        let r = RecordOut {
            tags: &section,
            ..sample()
        };
        let mut buf = Vec::new();
        r.encode_into(&mut buf);
        assert_eq!(
            buf,
            unhex(SAMPLE_TAGGED_HEX),
            "the encoding of a tagged record changed"
        );
        let (d, n) = decode(&buf).expect("decodes");
        assert_eq!(n, buf.len());
        assert_eq!(d.flags, FLAG_TX_END | FLAG_TAGS);
        assert_eq!(d.tags().collect::<Vec<_>>(), ["course:c1", "s7"]);
        assert!(d.has_tag("s7") && !d.has_tag("s"));
        assert_eq!(d.data, &br#"{"x":true}"#[..]);
        let e = d.to_event(&mut NameCache::default()).expect("an event");
        assert_eq!(&e.tags[..], &tags[..]);
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad).is_err(), "flipped bit {bit} went unnoticed");
        }
        // A record without tags has none.
        let mut plain = Vec::new();
        sample().encode_into(&mut plain);
        let (d, _) = decode(&plain).unwrap();
        assert_eq!(d.tags().count(), 0);
    }

    /// Bodies that pass their CRC but break the tags section's rules are malformed.
    #[test]
    fn malformed_tags_sections_are_refused() {
        let frame = |body: &[u8]| {
            let mut out = (body.len() as u32).to_le_bytes().to_vec();
            out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
            out.extend_from_slice(body);
            out
        };
        let mut plain = Vec::new();
        sample().encode_into(&mut plain);
        let body = plain[FRAME_HEADER_BYTES..].to_vec();
        let with = |flags: u8, tail: &[u8]| {
            let mut b = body.clone();
            b[1] = flags;
            b.extend_from_slice(tail);
            frame(&b)
        };
        let cases: &[(u8, &[u8])] = &[
            (FLAG_TX_END, b"\x01\x01a"),    // bytes after the fields without the flag
            (FLAG_TX_END | FLAG_TAGS, b""), // the flag without a section
            (FLAG_TX_END | FLAG_TAGS, b"\x00"), // no tag
            (FLAG_TX_END | FLAG_TAGS, b"\x02\x01a"), // fewer tags than counted
            (FLAG_TX_END | FLAG_TAGS, b"\x01\x00"), // an empty tag
            (FLAG_TX_END | FLAG_TAGS, b"\x01\x05ab"), // a tag longer than the section
            (FLAG_TX_END | FLAG_TAGS, b"\x01\x01ax"), // bytes after the last tag
            (FLAG_TX_END | FLAG_TAGS, b"\x01\x01\xff"), // not UTF-8
        ];
        for (flags, tail) in cases {
            assert!(
                matches!(decode(&with(*flags, tail)), Err(FrameError::Malformed(_))),
                "flags {flags} tail {tail:?}"
            );
        }
        assert!(decode(&with(FLAG_TX_END | FLAG_TAGS, b"\x01\x01a")).is_ok());
        let mut system = body.clone();
        system[0] = Kind::Metadata as u8;
        system[1] = FLAG_TX_END | FLAG_TAGS;
        system.extend_from_slice(b"\x01\x01a");
        assert!(matches!(
            decode(&frame(&system)),
            Err(FrameError::Malformed(_))
        ));
    }

    /// The names are checked as one run of UTF-8: a run that is valid only because a character
    /// straddles two names (or holds a byte that is never UTF-8) is malformed.
    #[test]
    fn names_that_split_a_character_or_are_not_utf8_are_refused() {
        let mut plain = Vec::new();
        sample().encode_into(&mut plain);
        let names = FRAME_HEADER_BYTES + BODY_FIXED_BYTES;
        let (sl, tl) = ("order-1".len(), "order.placed".len());
        let reframe = |mut buf: Vec<u8>| {
            let crc = crc32c::crc32c(&buf[FRAME_HEADER_BYTES..]);
            buf[4..8].copy_from_slice(&crc.to_le_bytes());
            buf
        };
        // "é" (C3 A9) cut between the stream and the type, then between the type and the
        // content type; and a 0xFF inside the content type.
        for (at, bytes) in [
            (names + sl - 1, &[0xC3, 0xA9][..]),
            (names + sl + tl - 1, &[0xC3, 0xA9][..]),
            (names + sl + tl + 3, &[0xFF][..]),
        ] {
            let mut bad = plain.clone();
            bad[at..at + bytes.len()].copy_from_slice(bytes);
            let bad = reframe(bad);
            assert!(
                matches!(decode(&bad), Err(FrameError::Malformed(_))),
                "bytes {bytes:x?} at {at} were accepted"
            );
        }
        // The same bytes inside one name are a valid name.
        let mut good = plain.clone();
        good[names + 1..names + 3].copy_from_slice(&[0xC3, 0xA9]);
        let good = reframe(good);
        let (r, _) = decode(&good).unwrap();
        assert_eq!((r.stream, r.event_type), ("oéer-1", "order.placed"));
    }

    #[test]
    fn compacted_segment_headers_name_their_positions_and_every_flipped_bit_is_caught() {
        let h = encode_compacted_header(7, 100..250, false);
        assert_eq!(&h[8..12], &COMPACTED_SEGMENT_VERSION.to_le_bytes());
        assert_eq!(
            decode_segment_header(&h),
            Ok(SegmentHeader {
                no: 7,
                compacted: Some(100..250),
                tags: false
            })
        );
        let tagged = encode_compacted_header(7, 100..250, true);
        assert_eq!(
            &tagged[8..12],
            &TAGGED_COMPACTED_SEGMENT_VERSION.to_le_bytes()
        );
        assert_eq!(
            decode_segment_header(&tagged),
            Ok(SegmentHeader {
                no: 7,
                compacted: Some(100..250),
                tags: true
            })
        );
        for bit in 0..40 * 8 {
            let mut bad = h;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_segment_header(&bad).is_err(),
                "flipped bit {bit} of a compacted header went unnoticed"
            );
        }
        let backwards = encode_compacted_header(
            7,
            std::ops::Range {
                start: 250,
                end: 100,
            },
            false,
        );
        assert!(matches!(
            decode_segment_header(&backwards),
            Err(HeaderError::Damaged(_))
        ));
    }

    #[test]
    fn segment_headers() {
        let h = encode_segment_header(42);
        assert_eq!(
            decode_segment_header(&h),
            Ok(SegmentHeader {
                no: 42,
                compacted: None,
                tags: true
            })
        );
        let mut bad = h;
        bad[13] ^= 1;
        assert!(matches!(
            decode_segment_header(&bad),
            Err(HeaderError::Damaged(_))
        ));
        // An intact header of a later version is not damage.
        let mut newer = h;
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let crc = crc32c::crc32c(&newer[0..16]);
        newer[16..20].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_segment_header(&newer),
            Err(HeaderError::Newer {
                version: FORMAT_VERSION + 1
            })
        );
        // A version 0 was never written: damage.
        let mut zero = h;
        zero[8..12].copy_from_slice(&0u32.to_le_bytes());
        let crc = crc32c::crc32c(&zero[0..16]);
        zero[16..20].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_segment_header(&zero),
            Err(HeaderError::Damaged(_))
        ));
        assert_eq!(split_addr(addr(5, 1234)), (5, 1234));
    }
}
