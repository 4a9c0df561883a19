//! Stream-state snapshots (`NNNNNNNNNN.snap`): the in-memory state of every stream and the sparse
//! position map as they stood at the end of sealed segment N, so that opening a store reads
//! O(streams) bytes plus the index checkpoints of the segments sealed after N, instead of every
//! checkpoint. Derived data: a damaged or missing snapshot is ignored and the state rebuilt from
//! the checkpoints (and the log).

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use eventfold_core::StreamMetadata;

use crate::index::{LastBatch, StreamState};
use crate::io::FileIo;
use crate::segindex::Reader;
use crate::segment::write_atomically;

const SNAPSHOT_MAGIC: &[u8; 8] = b"EVFLDSNP";
const SNAPSHOT_VERSION: u32 = 2;
/// The version before the last appends' first ids: read as it is (the ids unknown).
const SNAPSHOT_VERSION_NO_IDS: u32 = 1;
/// Snapshots kept on disk: the newest and the one before it (if the newest is damaged).
pub const SNAPSHOTS_KEPT: usize = 2;

/// What a snapshot holds.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The last segment it covers (sealed).
    pub segment: u32,
    pub next_position: u64,
    pub events: u64,
    pub streams: Vec<StreamState>,
    pub sparse: Vec<(u64, u64)>,
}

pub fn snapshot_file_name(no: u32) -> String {
    format!("{no:010}.snap")
}

pub fn parse_snapshot_file_name(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".snap")?;
    (stem.len() == 10).then(|| stem.parse().ok()).flatten()
}

impl Snapshot {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.streams.len() * 96 + self.sparse.len() * 16);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.segment.to_le_bytes());
        out.extend_from_slice(&self.next_position.to_le_bytes());
        out.extend_from_slice(&self.events.to_le_bytes());
        out.extend_from_slice(&(self.streams.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.sparse.len() as u64).to_le_bytes());
        for s in &self.streams {
            out.extend_from_slice(&(s.name.len() as u16).to_le_bytes());
            out.extend_from_slice(s.name.as_bytes());
            out.extend_from_slice(&s.next_revision.to_le_bytes());
            out.extend_from_slice(&s.last_position.to_le_bytes());
            out.extend_from_slice(&s.deleted_before.to_le_bytes());
            let first_id = s.last_batch.and_then(|b| b.first_id);
            let flags = u8::from(s.tombstoned)
                | (u8::from(s.last_batch.is_some()) << 1)
                | (u8::from(first_id.is_some()) << 2);
            out.push(flags);
            if let Some(b) = &s.last_batch {
                for v in [b.first_revision, b.len, b.first_position, b.last_position] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            if let Some(id) = first_id {
                out.extend_from_slice(&id);
            }
            let meta = if s.metadata == StreamMetadata::default() {
                Vec::new()
            } else {
                serde_json::to_vec(&s.metadata).expect("stream metadata always serializes")
            };
            out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
            out.extend_from_slice(&meta);
        }
        for &(p, a) in &self.sparse {
            out.extend_from_slice(&p.to_le_bytes());
            out.extend_from_slice(&a.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Writes it atomically (temporary file, flush, rename, directory flush) and deletes
    /// snapshots older than the last [`SNAPSHOTS_KEPT`].
    pub fn write(&self, io: &dyn FileIo, dir: &Path, sync: bool) -> io::Result<()> {
        write_atomically(
            io,
            dir,
            &snapshot_file_name(self.segment),
            &self.encode(),
            sync,
        )?;
        let mut all = list(dir)?;
        all.retain(|&n| n <= self.segment);
        all.sort_unstable();
        let keep_from = all.len().saturating_sub(SNAPSHOTS_KEPT);
        for &old in &all[..keep_from] {
            let _ = io.remove_file(&dir.join(snapshot_file_name(old)));
        }
        Ok(())
    }

    /// Loads snapshot `no`; `Err` says why it cannot be used.
    pub fn load(dir: &Path, no: u32) -> Result<Snapshot, String> {
        let b = fs::read(dir.join(snapshot_file_name(no))).map_err(|e| e.to_string())?;
        decode(&b, no)
    }
}

/// Snapshot numbers in `dir`, unsorted.
pub fn list(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Some(n) = entry?
            .file_name()
            .to_str()
            .and_then(parse_snapshot_file_name)
        {
            out.push(n);
        }
    }
    Ok(out)
}

fn decode(b: &[u8], no: u32) -> Result<Snapshot, String> {
    if b.len() < 44 || &b[0..8] != SNAPSHOT_MAGIC {
        return Err("not a snapshot (bad magic)".into());
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader { b: body, at: 8 };
    let version = r.u32()?;
    if version != SNAPSHOT_VERSION && version != SNAPSHOT_VERSION_NO_IDS {
        return Err("unknown snapshot version".into());
    }
    if r.u32()? != no {
        return Err("it names another segment".into());
    }
    let mut s = Snapshot {
        segment: no,
        next_position: r.u64()?,
        events: r.u64()?,
        ..Snapshot::default()
    };
    let streams = r.u64()?;
    let sparse = r.u64()?;
    // Every stream takes at least 33 bytes and every sparse entry 16: refuse counts the body
    // cannot hold before reserving memory for them.
    if streams
        .saturating_mul(33)
        .saturating_add(sparse.saturating_mul(16))
        > body.len() as u64
    {
        return Err("counts larger than the file".into());
    }
    // The stream flags this version has: bit 2 (the last batch's first id) came in version 2.
    let known = if version == SNAPSHOT_VERSION {
        0b111
    } else {
        0b011
    };
    s.streams.reserve_exact(streams as usize);
    for _ in 0..streams {
        let n = usize::from(r.u16()?);
        let name = std::str::from_utf8(r.take(n)?).map_err(|_| "name is not UTF-8".to_owned())?;
        let mut st = StreamState::new(Arc::from(name));
        st.next_revision = r.u64()?;
        st.last_position = r.u64()?;
        st.deleted_before = r.u64()?;
        let flags = r.take(1)?[0];
        if flags & !known != 0 || flags & 0b110 == 0b100 {
            return Err(format!("stream flags {flags:#04x} are not valid"));
        }
        st.tombstoned = flags & 1 != 0;
        if flags & 2 != 0 {
            st.last_batch = Some(LastBatch {
                first_revision: r.u64()?,
                len: r.u64()?,
                first_position: r.u64()?,
                last_position: r.u64()?,
                first_id: None,
            });
        }
        if let (Some(b), true) = (&mut st.last_batch, flags & 4 != 0) {
            b.first_id = Some(r.array()?);
        }
        let m = r.u32()? as usize;
        let meta = r.take(m)?;
        if m > 0 {
            st.metadata = serde_json::from_slice(meta).map_err(|e| format!("metadata: {e}"))?;
        }
        s.streams.push(st);
    }
    s.sparse.reserve_exact(sparse as usize);
    for _ in 0..sparse {
        s.sparse.push((r.u64()?, r.u64()?));
    }
    if r.at != body.len() {
        return Err("trailing bytes".into());
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let mut with_id = StreamState::new(Arc::from("a"));
        with_id.next_revision = 5;
        with_id.last_position = 40;
        with_id.last_batch = Some(LastBatch {
            first_revision: 3,
            len: 2,
            first_position: 30,
            last_position: 40,
            first_id: Some([7; 16]),
        });
        let mut without_id = StreamState::new(Arc::from("b"));
        without_id.next_revision = 1;
        without_id.last_batch = Some(LastBatch {
            first_id: None,
            ..with_id.last_batch.expect("set")
        });
        let mut tombstoned = StreamState::new(Arc::from("c"));
        tombstoned.tombstoned = true;
        Snapshot {
            segment: 3,
            next_position: 41,
            events: 6,
            streams: vec![with_id, without_id, tombstoned],
            sparse: vec![(0, 32)],
        }
    }

    fn batches(s: &Snapshot) -> Vec<Option<LastBatch>> {
        s.streams.iter().map(|st| st.last_batch).collect()
    }

    #[test]
    fn the_last_appends_first_ids_survive_a_round_trip() {
        let s = sample();
        let back = decode(&s.encode(), 3).expect("decode");
        assert_eq!(batches(&back), batches(&s));
        assert!(back.streams[2].tombstoned);
        assert_eq!(back.sparse, s.sparse);
    }

    /// Version 1 as the builds before wrote it: the same without the ids and their flag.
    #[test]
    fn a_version_1_snapshot_is_read_without_first_ids() {
        let mut s = sample();
        for st in &mut s.streams {
            if let Some(b) = &mut st.last_batch {
                b.first_id = None;
            }
        }
        let mut b = s.encode();
        b[8..12].copy_from_slice(&SNAPSHOT_VERSION_NO_IDS.to_le_bytes());
        let n = b.len() - 4;
        let crc = crc32c::crc32c(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        let back = decode(&b, 3).expect("decode version 1");
        assert_eq!(batches(&back), batches(&s));

        // A version 1 snapshot with the id flag set is refused, not misread.
        let mut b = sample().encode();
        b[8..12].copy_from_slice(&SNAPSHOT_VERSION_NO_IDS.to_le_bytes());
        let n = b.len() - 4;
        let crc = crc32c::crc32c(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode(&b, 3).is_err());
    }
}
