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
    /// Flushes what was written so far of a file the engine is still building in the
    /// background (see [`write_paced`]): pacing for the disk, not a durability point (the
    /// file is flushed whole with [`FileIo::sync_all`] when done), so an injector may ignore it.
    fn sync_progress(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
    /// Fills `offset..end` of `file` (a segment being preallocated, at `path`) with zeros,
    /// flushed as [`write_paced`] flushes when `sync`; the caller flushes the file whole after.
    /// The default writes them through [`FileIo::write_file_at`].
    fn write_zeros(
        &self,
        file: &File,
        path: &Path,
        offset: u64,
        end: u64,
        sync: bool,
    ) -> io::Result<()> {
        let _ = path;
        write_zeros_buffered(self, file, offset, end, sync)
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

/// Bytes of a file written in the background (a preallocated segment, an index checkpoint, a
/// key table, a compacted segment) between two of its flushes, when the store flushes.
pub const PACED_SYNC_BYTES: usize = 256 << 10;

/// Writes `buf` at `offset` of a file the engine builds in the background and, when `sync`,
/// flushes it every [`PACED_SYNC_BYTES`] (RocksDB's `bytes_per_sync`, for the same reason): one
/// flush of a whole 64 MiB segment or a merged key table kept the disk busy for tens of
/// milliseconds, and the committer's flushes of acknowledged appends queued behind it (the
/// single-append open-loop p99, row (g) of `eventfold-bench engine`, was those stalls). The
/// caller still flushes the file whole at its end (`fsync`: its length and the last chunk).
pub fn write_paced<I: FileIo + ?Sized>(
    io: &I,
    file: &File,
    buf: &[u8],
    offset: u64,
    sync: bool,
) -> io::Result<()> {
    let mut pacer = Pacer::new(sync, offset);
    let mut at = 0;
    while at < buf.len() {
        let n = (buf.len() - at).min(PACED_SYNC_BYTES);
        io.write_file_at(file, &buf[at..at + n], offset + at as u64)?;
        at += n;
        if at < buf.len() {
            pacer.wrote(io, file, offset + at as u64)?;
        }
    }
    Ok(())
}

/// Zeros written over `offset..end` of `file` through `io`'s [`FileIo::write_file_at`], in
/// pieces of [`PACED_SYNC_BYTES`] paced as [`write_paced`] paces them.
pub fn write_zeros_buffered<I: FileIo + ?Sized>(
    io: &I,
    file: &File,
    offset: u64,
    end: u64,
    sync: bool,
) -> io::Result<()> {
    let zeros = vec![0u8; PACED_SYNC_BYTES.min(end.saturating_sub(offset) as usize)];
    let mut off = offset;
    let mut pacer = Pacer::new(sync, off);
    while off < end {
        let n = (end - off).min(zeros.len() as u64) as usize;
        io.write_file_at(file, &zeros[..n], off)?;
        off += n as u64;
        if off < end {
            pacer.wrote(io, file, off)?;
        }
    }
    Ok(())
}

/// Offsets, lengths and buffer addresses of [`write_zeros_direct`]'s writes are multiples of
/// this: the largest logical block size of the disks a store lives on (512 or 4096 bytes).
const DIRECT_ALIGN: usize = 4096;

/// Zeros over `offset..end` of `file` (at `path`) written with `O_DIRECT`, past the page cache:
/// the operating system's [`FileIo::write_zeros`].
///
/// Zeros written through the page cache cost a copy into memory and a second pass over the
/// disk: each page is written back as zeros, then again with the records the writer puts in it.
/// While a store was built in batches of 1,000 (row (e) of `eventfold-bench engine`) that copy
/// was 13-22% of the process's CPU time, and the engine appended 0.72-0.78 M events/s; with the
/// zeros written past the page cache, 0.96-1.02 M (`BENCHMARKS.md`, "Issue 12, 2026-12-06
/// (fifth session)"). The pages are then not in memory when the writer reaches them, and a
/// write to part of a page not in memory first reads it from the disk: the writer writes whole
/// pages where it enters one (see `Writer::hand_over`), so it does not wait on such reads.
///
/// The pieces not aligned to [`DIRECT_ALIGN`] (the segment's header block, a segment size that
/// is not a multiple) go through the page cache, and all of it does where the file system
/// refuses `O_DIRECT`. Each piece ([`PACED_SYNC_BYTES`]) is on the disk before the next is sent,
/// so no backlog of dirty pages waits for the flush at the end.
#[cfg(target_os = "linux")]
pub fn write_zeros_direct(
    file: &File,
    path: &Path,
    offset: u64,
    end: u64,
    sync: bool,
) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let align = DIRECT_ALIGN as u64;
    let start = offset.next_multiple_of(align).min(end);
    let stop = (end / align * align).max(start);
    let direct = if stop > start {
        OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path)
            .ok()
    } else {
        None
    };
    let Some(direct) = direct else {
        return write_zeros_buffered(&OsIo, file, offset, end, sync);
    };
    write_zeros_buffered(&OsIo, file, offset, start, false)?;
    let chunk = PACED_SYNC_BYTES.min((stop - start) as usize);
    let buf = vec![0u8; chunk + DIRECT_ALIGN];
    let skew = buf.as_ptr().align_offset(DIRECT_ALIGN);
    let zeros = &buf[skew..skew + chunk];
    let mut at = start;
    while at < stop {
        let n = (stop - at).min(chunk as u64) as usize;
        match direct.write_all_at(&zeros[..n], at) {
            Ok(()) => at += n as u64,
            // A file system that opens files `O_DIRECT` but asks another alignment of them.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                return write_zeros_buffered(&OsIo, file, at, end, sync);
            }
            Err(e) => return Err(e),
        }
    }
    write_zeros_buffered(&OsIo, file, stop, end, false)?;
    Ok(())
}

/// The one rule of [`write_paced`] for a file written piece by piece (a key table, a
/// compacted segment, a preallocated segment): after each piece, flushed once
/// [`PACED_SYNC_BYTES`] were written since the last flush, when the store flushes.
#[derive(Debug)]
pub struct Pacer {
    sync: bool,
    synced: u64,
}

impl Pacer {
    /// A file the store flushes (`sync`), written from `start`.
    pub fn new(sync: bool, start: u64) -> Self {
        Pacer {
            sync,
            synced: start,
        }
    }

    /// The file is written up to `end`: flushes it if that is `PACED_SYNC_BYTES` past the
    /// last flush.
    pub fn wrote<I: FileIo + ?Sized>(&mut self, io: &I, file: &File, end: u64) -> io::Result<()> {
        if self.sync && end.saturating_sub(self.synced) >= PACED_SYNC_BYTES as u64 {
            io.sync_progress(file)?;
            self.synced = end;
        }
        Ok(())
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

    #[cfg(target_os = "linux")]
    fn write_zeros(
        &self,
        file: &File,
        path: &Path,
        offset: u64,
        end: u64,
        sync: bool,
    ) -> io::Result<()> {
        write_zeros_direct(file, path, offset, end, sync)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Real I/O that counts the writes and flushes of derived files.
    #[derive(Debug, Default)]
    struct Counting {
        writes: AtomicUsize,
        syncs: AtomicUsize,
    }

    impl FileIo for Counting {
        fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
            file.write_all_at(buf, offset)
        }
        fn sync_data(&self, file: &File) -> io::Result<()> {
            file.sync_data()
        }
        fn sync_progress(&self, file: &File) -> io::Result<()> {
            self.syncs.fetch_add(1, Ordering::Relaxed);
            file.sync_data()
        }
        fn write_file_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            file.write_all_at(buf, offset)
        }
    }

    /// A background file is flushed every `PACED_SYNC_BYTES` while it is written (none after
    /// the last chunk: the caller's `fsync` follows), not at all without `sync`, and its bytes
    /// land where they belong either way; preallocating a segment flushes the same way.
    #[test]
    fn background_files_are_flushed_as_they_are_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..PACED_SYNC_BYTES * 5 / 2)
            .map(|i| (i % 251) as u8)
            .collect();
        for (sync, syncs) in [(true, 2), (false, 0)] {
            let io = Counting::default();
            let f = io.open_rw(&path, true, true).expect("open");
            write_paced(&io, &f, &bytes, 7, sync).expect("write");
            assert_eq!(io.writes.load(Ordering::Relaxed), 3);
            assert_eq!(io.syncs.load(Ordering::Relaxed), syncs, "sync {sync}");
            let back = std::fs::read(&path).expect("read");
            assert_eq!(&back[7..], &bytes[..]);
        }
        let io = Counting::default();
        let seg_bytes = 4 * PACED_SYNC_BYTES as u64;
        let made = crate::segment::preallocate(&io, dir.path(), 3, seg_bytes, true).expect("made");
        assert_eq!(std::fs::metadata(&made).expect("stat").len(), seg_bytes);
        assert_eq!(io.syncs.load(Ordering::Relaxed), 3);
    }

    /// The operating system's zeros (`O_DIRECT` where they are aligned, the page cache where
    /// not) cover exactly the range asked, over the bytes that were there, and a read through
    /// the page cache sees them.
    #[test]
    fn zeros_cover_the_range_whatever_its_alignment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let ranges = [
            (64u64, 4u64 << 20),
            (100, (1 << 20) + 1000),
            (4096, 8192),
            (4095, 4097),
            (10, 20),
            (5000, 5000),
        ];
        for (offset, end) in ranges {
            let len = end as usize + 5000;
            std::fs::write(&path, vec![0xffu8; len]).expect("fill");
            let f = OsIo.open_rw(&path, false, false).expect("open");
            // Read it in, so that stale cached pages would show if the zeros bypassed them.
            assert_eq!(std::fs::read(&path).expect("read").len(), len);
            OsIo.write_zeros(&f, &path, offset, end, true)
                .expect("zeros");
            drop(f);
            let back = std::fs::read(&path).expect("read");
            let (offset, end) = (offset as usize, end as usize);
            assert_eq!(back.len(), len);
            assert!(
                back[..offset].iter().all(|&b| b == 0xff),
                "{offset}..{end}: before"
            );
            let nonzero = back[offset..end].iter().position(|&b| b != 0);
            assert_eq!(nonzero, None, "{offset}..{end}: a byte not zeroed");
            assert!(
                back[end..].iter().all(|&b| b == 0xff),
                "{offset}..{end}: after"
            );
        }
    }
}
