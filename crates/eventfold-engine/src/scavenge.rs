//! Scavenge: rewrites sealed segments without the events no read can return any more (those
//! of hard-deleted streams, below a soft delete or `truncate_before`, beyond `max_count`,
//! older than `max_age`), so that their bytes leave the disk. Online: appends, reads,
//! subscriptions and backups go on. Positions and revisions of the remaining events do not
//! change; a rewritten ("compacted") segment says in its header which positions it spans, and
//! the removed ones are gaps. See `FORMAT.md`, "Scavenging", for the order of the steps that
//! makes a crash at any point harmless.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use eventfold_core::{StoreError, StoreResult, Timestamp, Visibility};

use crate::format::{self, FLAG_TX_END, Kind, RecordOut, SEGMENT_HEADER_BYTES};
use crate::index::{SPARSE_EVERY, Summary};
use crate::keytable;
use crate::recovery::{memtable_of, scan_segment};
use crate::segindex::SegIndex;
use crate::segment::{SegmentScanner, index_file_name, read_at_most, segment_file_name};
use crate::shared::Shared;
use crate::snapshot;

/// What a scavenge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScavengeReport {
    /// Sealed segments looked at (the active one is never rewritten).
    pub segments_scanned: u64,
    /// Segments rewritten without their removable records.
    pub segments_compacted: u64,
    /// Event records removed.
    pub events_removed: u64,
    /// Event records kept in the rewritten segments.
    pub events_kept: u64,
    /// Bytes of the rewritten segments' files before.
    pub bytes_before: u64,
    /// Bytes of their files after.
    pub bytes_after: u64,
    /// How long it took.
    pub duration: Duration,
}

impl ScavengeReport {
    /// Bytes the rewritten segments gave back.
    pub fn bytes_reclaimed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// How far a scavenge has got: one call per sealed segment looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScavengeProgress {
    /// The segment just looked at.
    pub segment: u32,
    /// Segments looked at so far, and of how many.
    pub done: u64,
    pub total: u64,
    /// Whether this segment was rewritten.
    pub compacted: bool,
    /// The report so far.
    pub so_far: ScavengeReport,
}

/// What the scavenge needs to know of one stream to judge its records.
#[derive(Debug, Clone, Copy)]
struct Rule {
    visibility: Visibility,
    /// The positions of the stream's last append, kept for idempotent retries (unless the
    /// stream is hard-deleted).
    last_batch: Option<(u64, u64)>,
}

impl Rule {
    /// Whether the event at `revision` and `position`, committed at `timestamp_us`, may go.
    fn removes(&self, revision: u64, position: u64, timestamp_us: i64) -> bool {
        if self.visibility.tombstoned {
            return true;
        }
        if self
            .last_batch
            .is_some_and(|(first, last)| (first..=last).contains(&position))
        {
            return false;
        }
        !self.visibility.shows(revision, timestamp_us)
    }

    /// Whether some event of the stream may go, without looking at commit times: `None`
    /// when only its commit time can tell (max-age).
    fn may_remove(&self, revision: u64, position: u64) -> Option<bool> {
        if self.removes(revision, position, i64::MAX) {
            Some(true)
        } else if self.visibility.min_timestamp_us.is_some() && !self.in_last_batch(position) {
            None
        } else {
            Some(false)
        }
    }

    fn in_last_batch(&self, position: u64) -> bool {
        self.last_batch
            .is_some_and(|(first, last)| (first..=last).contains(&position))
    }
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| StoreError::io(what, e)
}

/// Runs a scavenge over every sealed segment whose entries are in key tables on disk (a
/// segment sealed a moment ago, whose table is not written yet, waits for the next one).
/// `None` when another scavenge is running.
pub fn scavenge(
    shared: &Shared,
    progress: &mut dyn FnMut(&ScavengeProgress),
) -> StoreResult<Option<ScavengeReport>> {
    let Some(_only) = shared.scavenging.try_lock() else {
        return Ok(None);
    };
    let started = Instant::now();
    let segments = sealed_and_indexed(shared);
    let now = Timestamp::now().micros();
    let mut report = ScavengeReport::default();
    for (i, &no) in segments.iter().enumerate() {
        let compacted = scavenge_segment(shared, no, now, &mut report)?;
        report.segments_scanned += 1;
        report.duration = started.elapsed();
        progress(&ScavengeProgress {
            segment: no,
            done: i as u64 + 1,
            total: segments.len() as u64,
            compacted,
            so_far: report.clone(),
        });
    }
    report.duration = started.elapsed();
    Ok(Some(report))
}

/// How long a scavenge waits for the key tables of segments sealed just before it; segments
/// still without one wait for the next scavenge.
const INDEX_WAIT: Duration = Duration::from_secs(30);

/// The sealed segments whose key tables are written, after waiting (up to [`INDEX_WAIT`]) for
/// those of segments sealed just before the call: a scavenge covers every segment sealed
/// before it started.
fn sealed_and_indexed(shared: &Shared) -> Vec<u32> {
    let deadline = Instant::now() + INDEX_WAIT;
    loop {
        let (frozen, tabled) = {
            let index = shared.index.read();
            (index.has_frozen(), index.tabled_segments())
        };
        if !frozen || Instant::now() >= deadline {
            return tabled;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether segment `no` is one a scavenge rewrote (its header is version 2 or 4). Asked under
/// [`Shared::maintenance`] by the writer's housekeeper before it writes the checkpoint of a
/// segment sealed a moment ago: one a scavenge got to first has the new file's already.
pub fn is_compacted(shared: &Shared, no: u32) -> bool {
    shared
        .segments
        .file(no)
        .is_some_and(|f| matches!(segment_header(shared, no, &f), Ok(h) if h.compacted.is_some()))
}

/// The rules of the streams a checkpoint names, as the index stands now.
fn rules_of(shared: &Shared, ix: &SegIndex, now: i64) -> Vec<Option<Rule>> {
    let index = shared.index.read();
    ix.strings
        .iter()
        .map(|name| {
            index.stream(name).map(|st| Rule {
                visibility: st.head().visibility(&st.metadata, now),
                last_batch: st.last_batch.map(|b| (b.first_position, b.last_position)),
            })
        })
        .collect()
}

/// The header of segment `no` as it is now: the positions it spans if compacted, and whether
/// its records may carry tags.
fn segment_header(shared: &Shared, no: u32, file: &File) -> StoreResult<format::SegmentHeader> {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    let n = read_at_most(file, &mut header, 0).map_err(io_err(format!(
        "read {}",
        shared.segments.path(no).display()
    )))?;
    format::decode_segment_header(&header[..n])
        .map_err(|e| shared.segments.corrupt(no, 0, e.to_string()))
}

/// The rewritten segment, written and flushed under a temporary name.
struct Rewritten {
    tmp: std::path::PathBuf,
    segindex: SegIndex,
    sparse: Vec<(u64, u64)>,
    events_removed: u64,
    events_kept: u64,
    len: u64,
}

/// Scavenges sealed segment `no`; `true` when it was rewritten.
fn scavenge_segment(
    shared: &Shared,
    no: u32,
    now: i64,
    report: &mut ScavengeReport,
) -> StoreResult<bool> {
    // The checkpoint says what the segment holds without reading it (a segment without one,
    // or with a damaged one, is scanned).
    let ix = checkpoint_of(shared, no)?;
    let rules = rules_of(shared, &ix, now);
    let mut worth = false;
    for e in ix
        .entries
        .iter()
        .filter(|e| SegIndex::kind(e) == Kind::Event)
    {
        match rules[e.stream as usize].map(|r| r.may_remove(e.revision, e.position)) {
            Some(Some(false)) => {}
            // A stream the index does not know holds no event: the checkpoint is stale.
            None => return Ok(false),
            Some(_) => {
                worth = true;
                break;
            }
        }
    }
    if !worth {
        return Ok(false);
    }
    let Some(old) = shared.segments.file(no) else {
        return Ok(false);
    };
    let old_len = old
        .metadata()
        .map_err(io_err(format!(
            "stat {}",
            shared.segments.path(no).display()
        )))?
        .len();
    let header = segment_header(shared, no, &old)?;
    let span = match header.compacted {
        Some(span) => span,
        None => match (ix.entries.first(), ix.entries.last()) {
            (Some(first), Some(last)) => first.position..last.position + 1,
            _ => return Ok(false),
        },
    };
    let rewritten = rewrite(shared, no, &old, &ix, &rules, span, header.tags)?;
    if rewritten.events_removed == 0 {
        let _ = shared.io.remove_file(&rewritten.tmp);
        return Ok(false);
    }
    if !commit(shared, no, &rewritten)? {
        return Ok(false);
    }
    report.segments_compacted += 1;
    report.events_removed += rewritten.events_removed;
    report.events_kept += rewritten.events_kept;
    report.bytes_before += old_len;
    report.bytes_after += rewritten.len;
    tracing::info!(
        segment = no,
        removed = rewritten.events_removed,
        kept = rewritten.events_kept,
        bytes_before = old_len,
        bytes_after = rewritten.len,
        "segment scavenged"
    );
    Ok(true)
}

/// Copies the records of segment `no` that stay into `NNNNNNNNNN.seg.scavenge.tmp` (deleted
/// on open if a crash leaves it), with a compacted header spanning `span`, and flushes it.
fn rewrite(
    shared: &Shared,
    no: u32,
    old: &Arc<File>,
    ix: &SegIndex,
    rules: &[Option<Rule>],
    span: Range<u64>,
    tags: bool,
) -> StoreResult<Rewritten> {
    let tmp = shared
        .dir
        .join(format!("{}.scavenge.tmp", segment_file_name(no)));
    let path_of_tmp = tmp.display().to_string();
    let by_name: HashMap<&str, Option<Rule>> = ix
        .strings
        .iter()
        .zip(rules)
        .map(|(n, r)| (&**n, *r))
        .collect();
    let f = shared
        .io
        .open_rw(&tmp, true, true)
        .map_err(io_err(format!("create {path_of_tmp}")))?;
    let result = (|| {
        // A segment whose records may carry tags stays one (version 4), else version 2.
        let header = format::encode_compacted_header(no, span, tags);
        shared
            .io
            .write_file_at(&f, &header, 0)
            .map_err(io_err(format!("write {path_of_tmp}")))?;
        let mut out = Rewritten {
            tmp: tmp.clone(),
            segindex: SegIndex::new(no),
            sparse: Vec::new(),
            events_removed: 0,
            events_kept: 0,
            len: SEGMENT_HEADER_BYTES,
        };
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut buf_at = SEGMENT_HEADER_BYTES;
        let mut pacer = crate::io::Pacer::new(shared.sync, buf_at);
        // Whether records of the current transaction were kept and its end is still to come:
        // then its end record stays too, whatever the rules say (a transaction is only ever
        // cut to a suffix, but the log must never hold one without its end).
        let mut open_tx = false;
        let mut scanner = SegmentScanner::new(old.clone(), SEGMENT_HEADER_BYTES, ix.end_offset);
        loop {
            let rec = scanner.next_record().map_err(io_err(format!(
                "read {}",
                shared.segments.path(no).display()
            )))?;
            let r = match rec {
                Ok(Some((_, r))) => r,
                Ok(None) => break,
                Err(e) => return Err(shared.segments.corrupt(no, scanner.offset, e.to_string())),
            };
            let tx_end = r.flags & FLAG_TX_END != 0;
            let remove = r.kind == Kind::Event
                && !(open_tx && tx_end)
                && by_name
                    .get(r.stream)
                    .copied()
                    .flatten()
                    .is_some_and(|rule| rule.removes(r.revision, r.position, r.timestamp_us));
            if remove {
                out.events_removed += 1;
                continue;
            }
            if r.kind == Kind::Event {
                out.events_kept += 1;
            }
            open_tx = !tx_end;
            let offset = out.len;
            let before = buf.len();
            RecordOut {
                kind: r.kind,
                flags: r.flags,
                stream: r.stream,
                event_type: r.event_type,
                content_type: r.content_type,
                position: r.position,
                revision: r.revision,
                timestamp_us: r.timestamp_us,
                id: r.id,
                schema_version: r.schema_version,
                metadata: r.metadata,
                data: r.data,
                tags: r.tags,
            }
            .encode_into(&mut buf);
            out.len += (buf.len() - before) as u64;
            let addr = format::addr(no, offset);
            if out.sparse.is_empty() || r.position.is_multiple_of(SPARSE_EVERY) {
                out.sparse.push((r.position, addr));
            }
            out.segindex.add(
                &Summary {
                    kind: r.kind,
                    flags: r.flags,
                    stream: r.stream,
                    event_type: r.event_type,
                    position: r.position,
                    revision: r.revision,
                    addr,
                    id: Some(r.id),
                },
                out.len,
            );
            if buf.len() >= crate::io::PACED_SYNC_BYTES {
                shared
                    .io
                    .write_file_at(&f, &buf, buf_at)
                    // Flushed as it grows (see `io::write_paced`).
                    .and_then(|()| pacer.wrote(&*shared.io, &f, buf_at + buf.len() as u64))
                    .map_err(io_err(format!("write {path_of_tmp}")))?;
                buf_at += buf.len() as u64;
                buf.clear();
            }
        }
        if open_tx {
            return Err(shared.segments.corrupt(
                no,
                ix.end_offset,
                "a transaction is cut off at the end of a sealed segment".into(),
            ));
        }
        shared
            .io
            .write_file_at(&f, &buf, buf_at)
            .map_err(io_err(format!("write {path_of_tmp}")))?;
        out.segindex.end_offset = out.len;
        if shared.sync {
            shared
                .io
                .sync_all(&f)
                .map_err(io_err(format!("flush {path_of_tmp}")))?;
        }
        Ok(out)
    })();
    if result.is_err() {
        // Give back the space (a full disk): nothing of the log was touched.
        let _ = shared.io.remove_file(&tmp);
    }
    result
}

/// Swaps the rewritten segment in. In this order, so that a crash anywhere leaves a store
/// that opens with every remaining event: (1) delete what holds addresses of the old file
/// (its checkpoint, the key table covering it, snapshots from it on) and flush the
/// directory; (2) rename the new file over the old and flush the directory; (3) write the
/// key tables of the segments the deleted table covered; (4) swap file, tables and sparse
/// entries in memory at once, with no read in flight; (5) write the new checkpoint. A crash
/// before (2) leaves the old segment without derived files, after it the new one: the next
/// open rebuilds what is missing from the segment itself. `false` when the segment's entries
/// are no longer in a key table (nothing was changed).
fn commit(shared: &Shared, no: u32, rw: &Rewritten) -> StoreResult<bool> {
    let dir = &shared.dir;
    let io = &*shared.io;
    let flush_dir = || -> StoreResult<()> {
        if shared.sync {
            io.sync_dir(dir)
                .map_err(io_err(format!("flush {}", dir.display())))?;
        }
        Ok(())
    };
    let _m = shared.maintenance.lock();
    if shared.closed.load(Ordering::Acquire) {
        let _ = io.remove_file(&rw.tmp);
        return Err(StoreError::Closed);
    }
    let Some(table) = shared.index.read().table_covering(no) else {
        let _ = io.remove_file(&rw.tmp);
        return Ok(false);
    };
    // (1)
    remove_if_there(io, &dir.join(index_file_name(no)))?;
    remove_if_there(io, &table.path)?;
    for s in snapshot::list(dir).map_err(io_err(format!("list {}", dir.display())))? {
        if s >= no {
            remove_if_there(io, &dir.join(snapshot::snapshot_file_name(s)))?;
        }
    }
    flush_dir()?;
    // (2)
    let path = shared.segments.path(no);
    io.rename(&rw.tmp, &path).map_err(io_err(format!(
        "rename {} to {}",
        rw.tmp.display(),
        path.display()
    )))?;
    flush_dir()?;
    let file = Arc::new(File::open(&path).map_err(io_err(format!("open {}", path.display())))?);
    // (3)
    let bits = shared.index.read().hash_bits;
    let mut tables = Vec::new();
    for s in table.first_seg..=table.last_seg {
        let ix = if s == no {
            rw.segindex.clone()
        } else {
            checkpoint_of(shared, s)?
        };
        let mem = memtable_of(&ix, bits);
        let t = keytable::write_memtable(io, dir, s, &mem, bits, shared.sync)
            .map_err(io_err(format!("write the key table of segment {s}")))?;
        tables.push(Arc::new(t));
    }
    // (4)
    {
        let _gate = shared.gate.write();
        let mut index = shared.index.write();
        shared.segments.insert(no, file);
        if !index.replace_table(&table, tables) {
            return Err(StoreError::Backend {
                code: "internal".into(),
                message: format!(
                    "the key table {} left the index during a scavenge (a bug)",
                    table.path.display()
                ),
            });
        }
        index.compacted(no, rw.sparse.clone(), rw.events_removed);
        shared.epoch.fetch_add(1, Ordering::AcqRel);
    }
    // (5) Derived data: the next open rebuilds it when this fails.
    if let Err(e) = rw.segindex.write(io, dir, shared.sync) {
        tracing::warn!(segment = no, error = %e, "could not write the index checkpoint of a scavenged segment; the next open rebuilds it");
    }
    Ok(true)
}

/// The checkpoint of sealed segment `s`, from its file or, when it has none, a scan.
fn checkpoint_of(shared: &Shared, s: u32) -> StoreResult<SegIndex> {
    if let Ok(Some(ix)) = SegIndex::load(&shared.dir, s) {
        return Ok(ix);
    }
    let file = shared.segments.file(s).ok_or_else(|| {
        shared
            .segments
            .corrupt(s, 0, "a sealed segment is missing".into())
    })?;
    let len = file
        .metadata()
        .map_err(io_err(format!(
            "stat {}",
            shared.segments.path(s).display()
        )))?
        .len();
    Ok(scan_segment(&shared.segments, s, &file, len, false)?.segindex)
}

fn remove_if_there(io: &dyn crate::io::FileIo, path: &Path) -> StoreResult<()> {
    match io.remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(format!("delete {}", path.display()), e)),
    }
}
