//! `eventfold verify DIR`: checks a whole store without changing it.

use std::fmt;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use eventfold_core::{StoreError, StoreResult};

use crate::format::{self, SEGMENT_HEADER_BYTES};
use crate::index::Index;
use crate::recovery::{apply_segment, lock_dir, scan_segment};
use crate::segindex::SegIndex;
use crate::segment::{self, Segments, read_at_most};

/// What `verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: u64,
    /// Records (events and system records) whose checksums were verified.
    pub records: u64,
    /// Event records among them.
    pub events: u64,
    /// Streams.
    pub streams: u64,
    /// Bytes of records.
    pub bytes: u64,
    /// Index checkpoints that matched their segment.
    pub checkpoints_ok: u64,
    /// Segments a scavenge rewrote (format version 2: gaps where removed records were).
    pub compacted_segments: u64,
    /// Unacknowledged bytes at the tail that the next open will cut off (after a crash).
    pub torn_tail_bytes: u64,
    /// Things that are wrong, one sentence each.
    pub problems: Vec<String>,
    /// Things worth knowing that are not damage.
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// `true` when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} segments, {} records ({} events) in {} streams, {} bytes; every record's checksum verified",
            self.segments, self.records, self.events, self.streams, self.bytes
        )?;
        writeln!(
            f,
            "{} index checkpoints match their segments",
            self.checkpoints_ok
        )?;
        if self.compacted_segments > 0 {
            writeln!(
                f,
                "{} segments compacted by a scavenge (positions and revisions of the removed events are gaps)",
                self.compacted_segments
            )?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        for p in &self.problems {
            writeln!(f, "PROBLEM: {p}")?;
        }
        if self.is_ok() {
            write!(f, "OK: the store is whole")
        } else {
            write!(f, "FAILED: {} problem(s) found", self.problems.len())
        }
    }
}

/// Checks every segment, every record's checksum, the sequence of positions and revisions, and
/// the index checkpoints. Changes nothing. Fails with `Locked` while a server has the store open.
pub fn verify(dir: impl AsRef<Path>) -> StoreResult<VerifyReport> {
    let dir = dir.as_ref();
    if !dir.join(crate::segment::LOCK_FILE).exists() {
        return Err(StoreError::Backend {
            code: "not_a_store".into(),
            message: format!(
                "{} is not an eventfold data directory (no LOCK file); check the path",
                dir.display()
            ),
        });
    }
    let _lock = lock_dir(&crate::io::OsIo, dir)?;
    let numbers = list_segments_readonly(dir)?;
    let segments = Segments::new(dir.to_path_buf());
    let mut report = VerifyReport::default();
    let mut index = Index::new(crate::keytable::KEY_HASH_BITS_MAX);
    let last = numbers.last().copied();
    for &no in &numbers {
        let path = segments.path(no);
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .open(&path)
                .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?,
        );
        let len = file
            .metadata()
            .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?
            .len();
        let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
        let n = read_at_most(&file, &mut header, 0)
            .map_err(|e| StoreError::io(format!("read {}", path.display()), e))?;
        let compacted = match format::decode_segment_header(&header[..n]) {
            Ok(h) if h.no == no => h.compacted,
            Ok(h) => {
                report.problems.push(format!(
                    "{}: the header names segment {}",
                    path.display(),
                    h.no
                ));
                continue;
            }
            Err(why) => {
                report.problems.push(format!("{}: {why}", path.display()));
                continue;
            }
        };
        if compacted.is_some() {
            report.compacted_segments += 1;
        }
        segments.insert(no, file.clone());
        report.segments += 1;
        let is_last = Some(no) == last;
        let scan = match scan_segment(&segments, no, &file, len, is_last) {
            Ok(s) => s,
            Err(e) => {
                report.problems.push(e.to_string());
                continue;
            }
        };
        if is_last && scan.garbage_end > scan.end {
            report.torn_tail_bytes = scan.garbage_end - scan.end;
            report.notes.push(format!(
                "{}: {} unacknowledged bytes after offset {} (a crash interrupted a write); the next open cuts them off",
                path.display(),
                report.torn_tail_bytes,
                scan.end
            ));
        }
        if !is_last {
            match SegIndex::load(dir, no) {
                Ok(Some(ix)) if ix.entries == scan.segindex.entries && ix.strings == scan.segindex.strings && ix.end_offset == scan.end => {
                    report.checkpoints_ok += 1
                }
                Ok(Some(_)) => report.problems.push(format!(
                    "{}: the index checkpoint does not match its segment; delete it and it will be rebuilt on the next open",
                    dir.join(segment::index_file_name(no)).display()
                )),
                Ok(None) => report.notes.push(format!("segment {no} has no index checkpoint; the next open rebuilds it")),
                Err(why) => report.problems.push(format!(
                    "{}: {why}; delete it and it will be rebuilt on the next open",
                    dir.join(segment::index_file_name(no)).display()
                )),
            }
        }
        report.records += scan.segindex.entries.len() as u64;
        report.events += scan.segindex.entries.iter().filter(|e| e.kind == 1).count() as u64;
        report.bytes += scan.end - SEGMENT_HEADER_BYTES;
        if let Err(e) = apply_segment(&mut index, &segments, &scan.segindex, compacted.as_ref()) {
            report.problems.push(e.to_string());
        }
    }
    report.streams = index.stream_count() as u64;
    Ok(report)
}

fn list_segments_readonly(dir: &Path) -> StoreResult<Vec<u32>> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
        if let Some(no) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_segment_file_name)
        {
            out.push(no);
        }
    }
    out.sort_unstable();
    Ok(out)
}
