//! Opening a store: lock the directory, load the index checkpoints of sealed segments (or
//! rescan the segments they are missing for), scan the active segment, cut a torn tail.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use eventfold_core::{StoreError, StoreResult};

use crate::format::{
    self, FLAG_TX_END, HeaderError, Kind, SEGMENT_HEADER_BYTES, UNSYNCED_BYTES_MAX,
};
use crate::index::{Index, Summary};
use crate::io::FileIo;
use crate::keytable::{self, Memtable, Table};
use crate::options::{Durability, EngineOptions};
use crate::segindex::SegIndex;
use crate::segment::{self, SegmentScanner, Segments, read_at_most, segment_file_name};
use crate::snapshot::{self, Snapshot};
use crate::writer::WriterStart;

/// What `recover` hands to the engine.
#[derive(Debug)]
pub struct Recovered {
    pub index: Index,
    pub segments: Segments,
    pub start: WriterStart,
    pub lock: File,
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| StoreError::io(what, e)
}

/// Takes the directory's lock file; a second process gets `Locked`.
pub fn lock_dir(io: &dyn FileIo, dir: &Path) -> StoreResult<File> {
    io.create_dir_all(dir).map_err(io_err(format!(
        "create the data directory {}",
        dir.display()
    )))?;
    let lock = io
        .open_rw(&dir.join(crate::segment::LOCK_FILE), true, false)
        .map_err(io_err(format!(
            "open {}",
            dir.join(crate::segment::LOCK_FILE).display()
        )))?;
    // A lock that was just released may still be held for a moment by a child process that
    // another thread of the same process is spawning: between its fork and its exec the child
    // shares the lock's file description. Such a hold ends by itself; another process really
    // holding the directory does not, and is refused after LOCK_WAIT.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    dir: dir.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::io(
                    format!("lock {}", dir.join(crate::segment::LOCK_FILE).display()),
                    e,
                ));
            }
        }
    }
}

/// How long opening waits for a directory lock held by someone else before refusing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// A record of a transaction whose end has not been seen yet.
#[derive(Debug)]
struct PendingRecord {
    kind: Kind,
    flags: u8,
    stream: String,
    event_type: String,
    position: u64,
    revision: u64,
    id: [u8; 16],
    offset: u64,
    end: u64,
}

/// One segment's records as found by a scan.
#[derive(Debug)]
pub struct Scan {
    pub segindex: SegIndex,
    /// Where the next record goes: just past the last whole transaction.
    pub end: u64,
    /// Set when the scan stopped at a damaged record: (offset, what was wrong).
    pub torn_at: Option<(u64, String)>,
    /// The first offset past which the file is known to be all zeros (≥ end).
    pub garbage_end: u64,
}

/// Scans segment `no`. With `tail_ok`, a damaged record is accepted as a torn tail when it is
/// followed by nothing but zeros beyond the writer's unsynced window; otherwise it is an error.
/// Records of an unfinished transaction at the end are left out of the result either way.
pub fn scan_segment(
    segments: &Segments,
    no: u32,
    file: &Arc<File>,
    file_len: u64,
    tail_ok: bool,
) -> StoreResult<Scan> {
    let mut scanner = SegmentScanner::new(file.clone(), SEGMENT_HEADER_BYTES, file_len);
    let mut ix = SegIndex::new(no);
    let mut pending: Vec<PendingRecord> = Vec::new();
    let mut end = SEGMENT_HEADER_BYTES;
    let mut torn_at = None;
    loop {
        let rec = scanner
            .next_record()
            .map_err(io_err(format!("read {}", segments.path(no).display())))?;
        match rec {
            Ok(Some((off, r))) => {
                let next = off + r.encoded_len() as u64;
                pending.push(PendingRecord {
                    kind: r.kind,
                    flags: r.flags,
                    stream: r.stream.to_owned(),
                    event_type: r.event_type.to_owned(),
                    position: r.position,
                    revision: r.revision,
                    id: r.id,
                    offset: off,
                    end: next,
                });
                if r.flags & FLAG_TX_END != 0 {
                    for p in pending.drain(..) {
                        let s = Summary {
                            kind: p.kind,
                            flags: p.flags,
                            stream: &p.stream,
                            event_type: &p.event_type,
                            position: p.position,
                            revision: p.revision,
                            addr: format::addr(no, p.offset),
                            id: Some(p.id),
                        };
                        ix.add(&s, p.end);
                    }
                    end = next;
                }
            }
            Ok(None) => break,
            Err(e) => {
                torn_at = Some((scanner.offset, e.to_string()));
                break;
            }
        }
    }
    if !tail_ok {
        if let Some((off, why)) = torn_at {
            return Err(segments.corrupt(no, off, format!("{why} in a sealed segment")));
        }
        // A sealed segment was flushed whole before the next one took any byte, so it is all
        // zeros after its last record. Data after the zero length that stopped the scan means
        // that length was damaged, and the records after it are acknowledged: not a tail.
        let stop = scanner.offset;
        let data_end = last_nonzero(file, stop, file_len)
            .map_err(io_err(format!("read {}", segments.path(no).display())))?;
        if data_end > stop {
            return Err(segments.corrupt(
                no,
                stop,
                format!(
                    "record length zero but data follows up to offset {} in a sealed segment",
                    data_end - 1
                ),
            ));
        }
        if !pending.is_empty() {
            return Err(segments.corrupt(
                no,
                end,
                "a transaction is cut off at the end of a sealed segment".into(),
            ));
        }
    }
    // Anything non-zero past `end` was never acknowledged. It can only lie within the writer's
    // unsynced window; non-zero bytes beyond it mean the damage is not a torn tail.
    let window_end = (end + UNSYNCED_BYTES_MAX).min(file_len);
    let garbage_end = last_nonzero(file, end, window_end)
        .map_err(io_err(format!("read {}", segments.path(no).display())))?;
    if torn_at.is_some() || garbage_end > end {
        let beyond = last_nonzero(file, window_end, file_len)
            .map_err(io_err(format!("read {}", segments.path(no).display())))?;
        if beyond > window_end {
            let (off, why) = torn_at.unwrap_or((end, "unexpected data".into()));
            return Err(segments.corrupt(
                no,
                off,
                format!("{why}, followed by more data at offset {}: this is damage inside the log, not a torn tail, and is not repaired automatically", beyond - 1),
            ));
        }
    }
    ix.end_offset = end;
    Ok(Scan {
        segindex: ix,
        end,
        torn_at,
        garbage_end: garbage_end.max(end),
    })
}

/// One past the offset of the last non-zero byte in `[from, to)`, or `from` if all are zero.
fn last_nonzero(file: &File, from: u64, to: u64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut last = from;
    let mut off = from;
    while off < to {
        let n = ((to - off) as usize).min(buf.len());
        let got = read_at_most(file, &mut buf[..n], off)?;
        if got == 0 {
            break;
        }
        if let Some(i) = buf[..got].iter().rposition(|&b| b != 0) {
            last = off + i as u64 + 1;
        }
        off += got as u64;
    }
    Ok(last)
}

/// Applies a segment's checkpoint to the stream states (see [`apply_segindex`]); `compacted` is
/// what the segment's header says of the positions it spans, when a scavenge rewrote it.
pub fn apply_segment(
    index: &mut Index,
    segments: &Segments,
    ix: &SegIndex,
    compacted: Option<&std::ops::Range<u64>>,
) -> StoreResult<()> {
    index
        .begin_segment(compacted)
        .map_err(|err| segments.corrupt(ix.segment_no, 0, err.0))?;
    apply_segindex(index, segments, ix)?;
    index.end_segment();
    Ok(())
}

/// Applies a segment's checkpoint to the stream states, reading metadata records back from the
/// log.
fn apply_segindex(index: &mut Index, segments: &Segments, ix: &SegIndex) -> StoreResult<()> {
    let mut stream_ids: Vec<Option<u32>> = vec![None; ix.strings.len()];
    let mut buf = Vec::new();
    // The streams' last appends' first ids (version 2 checkpoints), in entry order.
    let mut first_ids = ix.first_ids().into_iter().peekable();
    for (i, e) in ix.entries.iter().enumerate() {
        let id = first_ids
            .next_if(|&(entry, _)| entry as usize == i)
            .map(|(_, id)| id);
        let kind = SegIndex::kind(e);
        let stream = &ix.strings[e.stream as usize];
        let sid =
            *stream_ids[e.stream as usize].get_or_insert_with(|| index.stream_id_or_insert(stream));
        let event_type = if kind == Kind::Event {
            &*ix.strings[e.event_type as usize]
        } else {
            kind.system_type()
        };
        let addr = format::addr(ix.segment_no, u64::from(e.offset));
        let metadata = if kind == Kind::Metadata {
            let r = segments.read_record(addr, &mut buf)?;
            Some(serde_json::from_slice(r.data).map_err(|err| {
                segments.corrupt(
                    ix.segment_no,
                    u64::from(e.offset),
                    format!("stream metadata does not parse: {err}"),
                )
            })?)
        } else {
            None
        };
        let s = Summary {
            kind,
            flags: e.flags,
            stream,
            event_type,
            position: e.position,
            revision: e.revision,
            addr,
            id,
        };
        index
            .apply(&s, sid, metadata)
            .map_err(|err| segments.corrupt(ix.segment_no, u64::from(e.offset), err.0))?;
    }
    Ok(())
}

/// The key-table entries of a segment's records.
pub fn memtable_of(ix: &SegIndex, hash_bits: u32) -> Memtable {
    let mut mem = Memtable::default();
    for e in ix
        .entries
        .iter()
        .filter(|e| SegIndex::kind(e) == Kind::Event)
    {
        mem.add_event(
            &ix.strings[e.stream as usize],
            &ix.strings[e.event_type as usize],
            e.revision,
            format::addr(ix.segment_no, u64::from(e.offset)),
            hash_bits,
        );
    }
    mem
}

/// The newest usable snapshot of a sealed segment (below `active_no`), if any.
fn load_snapshot(dir: &Path, numbers: &[u32], active_no: u32) -> Option<Snapshot> {
    let mut nos = snapshot::list(dir).ok()?;
    nos.sort_unstable_by(|a, b| b.cmp(a));
    for n in nos {
        if n >= active_no || numbers.binary_search(&n).is_err() {
            continue;
        }
        match Snapshot::load(dir, n) {
            Ok(s) => return Some(s),
            Err(why) => {
                tracing::warn!(snapshot = n, %why, "stream-state snapshot unusable; trying an older one")
            }
        }
    }
    None
}

/// What covers a sealed segment's key entries: a table found on disk, or one to build.
#[derive(Debug)]
enum Slot {
    Have(Arc<Table>),
    Build(u32),
}

/// Chooses key tables that cover the sealed segments `sealed` (in order) exactly once,
/// preferring the widest (merged) ones, and deletes every other table file: inputs of a merge
/// that finished, tables of another hash width, damaged ones.
fn choose_tables(
    io: &dyn FileIo,
    dir: &Path,
    sealed: &[u32],
    hash_bits: u32,
) -> StoreResult<Vec<Slot>> {
    let mut found: Vec<(u32, u32, std::path::PathBuf)> = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io_err(format!("list {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("list {}", dir.display())))?;
        let name = entry.file_name();
        if let Some((a, b)) = name.to_str().and_then(keytable::parse_table_file_name) {
            found.push((a, b, entry.path()));
        }
    }
    // Widest first for each first segment.
    found.sort_unstable_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)));
    let last_sealed = sealed.last().copied();
    let mut slots = Vec::new();
    let mut keep: Vec<std::path::PathBuf> = Vec::new();
    let mut covered_to: Option<u32> = None;
    for &no in sealed {
        if covered_to.is_some_and(|c| no <= c) {
            continue;
        }
        let mut chosen = None;
        for (a, b, path) in found.iter().filter(|f| f.0 == no) {
            if last_sealed.is_none_or(|l| *b > l) {
                continue;
            }
            match Table::open(path, hash_bits) {
                Ok(t) if t.first_seg == *a && t.last_seg == *b => {
                    chosen = Some(t);
                    break;
                }
                Ok(_) => {}
                Err(why) => {
                    tracing::warn!(file = %path.display(), %why, "key table unusable; it is rebuilt")
                }
            }
        }
        match chosen {
            Some(t) => {
                covered_to = Some(t.last_seg);
                keep.push(t.path.clone());
                slots.push(Slot::Have(Arc::new(t)));
            }
            None => {
                covered_to = Some(no);
                slots.push(Slot::Build(no));
            }
        }
    }
    for (_, _, path) in &found {
        if !keep.contains(path)
            && let Err(e) = io.remove_file(path)
        {
            tracing::warn!(file = %path.display(), error = %e, "could not delete an unused key table");
        }
    }
    Ok(slots)
}

/// The error for a segment written in a newer format: not corruption, and nothing is changed.
fn newer_format(path: &Path, version: u32) -> StoreError {
    StoreError::FormatTooNew {
        file: path.display().to_string(),
        found: version,
        supported: crate::format::FORMAT_VERSION,
    }
}

/// Opens the store in `dir` and rebuilds its state.
pub fn recover(dir: &Path, options: &EngineOptions) -> StoreResult<Recovered> {
    let io = &*options.io;
    let lock = lock_dir(io, dir)?;
    let sync = options.durability == Durability::Fsync;
    let mut numbers =
        segment::list_segments(io, dir).map_err(io_err(format!("list {}", dir.display())))?;
    if numbers.is_empty() {
        let tmp = segment::preallocate(io, dir, 0, options.segment_bytes, sync).map_err(io_err(
            format!("create the first segment in {}", dir.display()),
        ))?;
        io.rename(&tmp, &dir.join(segment_file_name(0)))
            .map_err(io_err(format!(
                "create the first segment in {}",
                dir.display()
            )))?;
        if sync {
            io.sync_dir(dir)
                .map_err(io_err(format!("flush {}", dir.display())))?;
        }
        numbers.push(0);
    }
    let segments = Segments::new(dir.to_path_buf());
    let last_no = *numbers.last().expect("at least one segment exists here");
    let hash_bits = options.index_hash_bits.min(keytable::KEY_HASH_BITS_MAX);
    let snapshot = load_snapshot(dir, &numbers, last_no);
    let snap_seg = snapshot.as_ref().map(|s| s.segment);
    let mut index = match snapshot {
        Some(s) => Index::from_snapshot(s, hash_bits),
        None => Index::new(hash_bits),
    };
    let sealed: Vec<u32> = numbers[..numbers.len() - 1].to_vec();
    let mut slots = choose_tables(io, dir, &sealed, hash_bits)?;
    let mut replayed = 0u32;
    let mut start = None;
    for &no in &numbers {
        let path = segments.path(no);
        let file = if no == last_no {
            io.open_rw(&path, false, false)
        } else {
            File::open(&path)
        };
        let file = Arc::new(file.map_err(io_err(format!("open {}", path.display())))?);
        let file_len = file
            .metadata()
            .map_err(io_err(format!("stat {}", path.display())))?
            .len();
        let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
        let n = read_at_most(&file, &mut header, 0)
            .map_err(io_err(format!("read {}", path.display())))?;
        let (compacted, tags) = match format::decode_segment_header(&header[..n]) {
            Ok(h) if h.no == no => (h.compacted, h.tags),
            Ok(h) => {
                return Err(segments.corrupt(no, 0, format!("the header names segment {}", h.no)));
            }
            Err(HeaderError::Newer { version }) => {
                return Err(newer_format(&path, version));
            }
            Err(HeaderError::Damaged(why)) => return Err(segments.corrupt(no, 0, why)),
        };
        if no == last_no && compacted.is_some() {
            return Err(segments.corrupt(
                no,
                0,
                "the last segment is a compacted one, but a scavenge only rewrites sealed segments"
                    .into(),
            ));
        }
        segments.insert(no, file.clone());
        if no != last_no {
            let need_state = snap_seg.is_none_or(|s| no > s);
            let build = slots
                .iter()
                .position(|sl| matches!(sl, Slot::Build(b) if *b == no));
            if !need_state && build.is_none() {
                continue;
            }
            let ix = match SegIndex::load(dir, no) {
                Ok(Some(ix)) if ix.end_offset <= file_len => ix,
                other => {
                    if let Err(why) = &other {
                        tracing::warn!(segment = no, %why, "index checkpoint unusable; rescanning the segment");
                    }
                    let scan = scan_segment(&segments, no, &file, file_len, false)?;
                    if let Err(e) = scan.segindex.write(io, dir, sync) {
                        tracing::warn!(segment = no, error = %e, "could not write the index checkpoint");
                    }
                    scan.segindex
                }
            };
            if need_state {
                apply_segment(&mut index, &segments, &ix, compacted.as_ref())?;
                replayed += 1;
            }
            if let Some(i) = build {
                let mem = memtable_of(&ix, hash_bits);
                slots[i] = match keytable::write_memtable(io, dir, no, &mem, hash_bits, sync) {
                    Ok(t) => Slot::Have(Arc::new(t)),
                    Err(e) => {
                        tracing::warn!(segment = no, error = %e, "could not write the key table; the segment's entries stay in memory");
                        index.push_frozen(no, Arc::new(mem));
                        Slot::Build(no)
                    }
                };
            }
            if no + 1 == last_no && replayed >= options.snapshot_every_segments.max(1) {
                // Many checkpoints were replayed: save the next open the work.
                if let Err(e) = index.snapshot(no).write(io, dir, sync) {
                    tracing::warn!(segment = no, error = %e, "could not write the stream-state snapshot");
                }
            }
        } else {
            let scan = scan_segment(&segments, no, &file, file_len, true)?;
            if scan.garbage_end > scan.end {
                let (off, why) = scan
                    .torn_at
                    .clone()
                    .unwrap_or((scan.end, "unfinished transaction".into()));
                tracing::warn!(
                    file = %path.display(),
                    offset = off,
                    %why,
                    cut = scan.end,
                    bytes = scan.garbage_end - scan.end,
                    "torn tail found after a crash: cutting off the unacknowledged bytes"
                );
                let zeros = vec![0u8; (scan.garbage_end - scan.end) as usize];
                options
                    .io
                    .write_all_at(&file, &zeros, scan.end)
                    .map_err(io_err(format!("cut the torn tail of {}", path.display())))?;
                options
                    .io
                    .sync_data(&file)
                    .map_err(io_err(format!("flush {}", path.display())))?;
            }
            apply_segment(&mut index, &segments, &scan.segindex, None)?;
            index.memtable = memtable_of(&scan.segindex, hash_bits);
            index.end_addr = format::addr(no, scan.end);
            start = Some(WriterStart {
                active_no: no,
                active: file,
                active_tags: tags,
                offset: scan.end,
                segindex: scan.segindex,
            });
        }
    }
    let start = start.expect("the last segment was scanned above");
    index.set_tables(slots.into_iter().filter_map(|s| match s {
        Slot::Have(t) => Some(t),
        Slot::Build(_) => None,
    }));
    Ok(Recovered {
        index,
        segments,
        start,
        lock,
    })
}
