//! The I/O surface of the engine, behind a trait so tests can inject torn writes, failed
//! flushes, full disks and power loss (redb's `StorageBackend` idea).
//!
//! Every file mutation the engine makes goes through [`FileIo`]: creating and opening files for
//! writing, writes, `set_len`, `fdatasync`/`fsync`, renames, removals and directory flushes.
//! Reads go straight to the files. Two methods are the log's hot path ([`FileIo::write_all_at`]
//! and [`FileIo::sync_data`]: records written into and flushed in the active segment); the others
//! serve everything else (preallocation, index checkpoints, key tables, snapshots, the lock file,
//! recovery's renames and removals) and have the operating system's behaviour as their default,
//! so an injector that only cares about the log overrides two methods.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

/// How the engine writes, flushes, creates, renames and removes files.
pub trait FileIo: Send + Sync + std::fmt::Debug + 'static {
    /// Writes all of `buf` at `offset` of a segment: the log's records (and recovery's zeroing
    /// of a torn tail).
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Flushes a segment's data to stable storage (`fdatasync`).
    fn sync_data(&self, file: &File) -> io::Result<()>;

    /// Opens `path` for reading and writing; creates it when `create`, empties it when
    /// `truncate`.
    fn open_rw(&self, path: &Path, create: bool, truncate: bool) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(truncate)
            .open(path)
    }
    /// Writes all of `buf` at `offset` of any other file (preallocation, derived files).
    fn write_file_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }
    /// Sets the file's length.
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }
    /// Flushes the file's data and metadata (`fsync`).
    fn sync_all(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }
    /// Renames `from` to `to`, replacing `to`. Durable only after [`FileIo::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    /// Removes the file. Durable only after [`FileIo::sync_dir`].
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    /// Creates the directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    /// Flushes a directory so that names created, renamed or removed in it are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The operating system's I/O: `pwrite`, `fdatasync` and the default methods. The default.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsIo;

impl FileIo for OsIo {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
}

/// A fault to inject into the next matching operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next write fails with an I/O error and writes nothing.
    FailWrite,
    /// The next write writes only its first `n` bytes, then fails (a torn write).
    TornWrite(usize),
    /// The next write fails with `ENOSPC` (disk full) and writes nothing.
    DiskFull,
    /// The next `fdatasync` fails.
    FailSync,
}

/// An [`FileIo`] that performs real I/O but injects the faults it is armed with, once each.
/// For tests.
#[derive(Debug, Default)]
pub struct FaultyIo {
    armed: Mutex<Vec<Fault>>,
}

impl FaultyIo {
    /// A new injector with nothing armed.
    pub fn new() -> Self {
        FaultyIo::default()
    }

    /// Arms `fault` for the next operation of its kind.
    pub fn arm(&self, fault: Fault) {
        self.armed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
    }

    fn take(&self, pred: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        let i = armed.iter().position(pred)?;
        Some(armed.remove(i))
    }
}

impl FileIo for FaultyIo {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        match self.take(|f| !matches!(f, Fault::FailSync)) {
            None => file.write_all_at(buf, offset),
            Some(Fault::FailWrite) => Err(io::Error::other("injected write failure")),
            Some(Fault::DiskFull) => Err(io::Error::from_raw_os_error(28)),
            Some(Fault::TornWrite(n)) => {
                file.write_all_at(&buf[..n.min(buf.len())], offset)?;
                Err(io::Error::other("injected torn write"))
            }
            Some(Fault::FailSync) => unreachable!("filtered out above"),
        }
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        match self.take(|f| matches!(f, Fault::FailSync)) {
            Some(_) => Err(io::Error::other("injected fdatasync failure")),
            None => file.sync_data(),
        }
    }
}

pub use crate::powerloss::{PowerLossIo, SECTOR_BYTES};
