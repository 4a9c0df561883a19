//! Online backups: a consistent cut of the log, taken without stopping appends.
//!
//! The cut is the end of the last published group (published only after its `fdatasync`):
//! every segment before the cut's segment whole, that segment up to the cut. Those bytes never
//! change again (sealed segments are never written; the active one is only appended to past the
//! cut), and the cut is taken from open file handles, so the copy can be read at leisure while
//! the writer goes on. Each sealed segment's index checkpoint (`N.idx`, derived data) comes
//! along when there is one, so that a restored store need not rescan its segments; key tables
//! and stream-state snapshots are left out: the store rebuilds them on its first open.
//!
//! A store restored from the files is a store that crashed right after the cut: recovery opens
//! it as such, with nothing to cut.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use eventfold_core::{StoreError, StoreResult};

use crate::engine::Engine;
use crate::segment::{index_file_name, parse_segment_file_name, segment_file_name};

/// Whether `name` is the name of a file a backup carries: a segment (`NNNNNNNNNN.seg`) or a
/// sealed segment's index checkpoint (`NNNNNNNNNN.idx`). A restore writes no other file.
pub fn is_backup_file_name(name: &str) -> bool {
    parse_segment_file_name(name).is_some()
        || name
            .strip_suffix(".idx")
            .is_some_and(|stem| parse_segment_file_name(&format!("{stem}.seg")).is_some())
}

/// One file of a backup: its name in the data directory and its first `len` bytes.
#[derive(Debug, Clone)]
pub struct BackupFile {
    name: String,
    file: Arc<File>,
    len: u64,
}

impl BackupFile {
    /// Its name in the data directory (a file name, no directory part).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bytes of the backup's copy.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the copy is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A reader of exactly the copy's bytes, from the handle the cut was taken on.
    pub fn reader(&self) -> BackupReader {
        BackupReader {
            file: self.file.clone(),
            pos: 0,
            len: self.len,
        }
    }
}

/// Reads a [`BackupFile`]'s bytes; a file shorter than the cut is an error, never a short copy.
#[derive(Debug)]
pub struct BackupReader {
    file: Arc<File>,
    pos: u64,
    len: u64,
}

impl Read for BackupReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len - self.pos;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended before the backup's cut",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A consistent cut of a store, for an online backup.
#[derive(Debug, Clone)]
pub struct BackupPlan {
    /// The files to copy, in order: segments ascending, each followed by its checkpoint.
    pub files: Vec<BackupFile>,
    /// The position the next event after the cut gets (the restored store's `next_position`).
    pub next_position: u64,
    /// Event records before the cut.
    pub events: u64,
}

impl BackupPlan {
    /// Bytes of all the files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.len).sum()
    }
}

impl Engine {
    /// Takes a consistent cut of the store for an online backup: every event acknowledged
    /// before the call is in it, appends go on meanwhile. Copy the plan's files into an empty
    /// directory and that directory is a store `Engine::open` and `verify` accept. Blocking
    /// (a `stat` and an `open` per sealed segment).
    pub fn backup(&self) -> StoreResult<BackupPlan> {
        let shared = self.shared();
        // No scavenge swaps a segment in while the cut is taken: each segment's handle and
        // checkpoint are of the same file.
        let _gate = shared.gate.read();
        let (end_no, end_off, next_position, events) = {
            let index = shared.index.read();
            let (no, off) = crate::format::split_addr(index.end_addr);
            (no, off, index.next_position, index.events)
        };
        let mut files = Vec::new();
        for (no, file) in shared.segments.up_to(end_no) {
            let len = if no == end_no {
                end_off
            } else {
                file.metadata()
                    .map_err(|e| {
                        StoreError::io(format!("stat {}", shared.segments.path(no).display()), e)
                    })?
                    .len()
            };
            files.push(BackupFile {
                name: segment_file_name(no),
                file,
                len,
            });
            if no == end_no {
                continue;
            }
            // The checkpoint is derived data: one not written yet is rebuilt on open.
            let name = index_file_name(no);
            if let Ok(f) = File::open(shared.dir.join(&name))
                && let Ok(meta) = f.metadata()
            {
                files.push(BackupFile {
                    name,
                    file: Arc::new(f),
                    len: meta.len(),
                });
            }
        }
        Ok(BackupPlan {
            files,
            next_position,
            events,
        })
    }
}
