//! The small I/O surface of the writer, behind a trait so tests can inject torn writes,
//! failed flushes and full disks (redb's `StorageBackend` idea).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// How the writer writes and flushes segment files.
pub trait FileIo: Send + Sync + std::fmt::Debug + 'static {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Flushes the file's data to stable storage (`fdatasync`).
    fn sync_data(&self, file: &File) -> io::Result<()>;
}

/// The operating system's I/O: `pwrite` and `fdatasync`.
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
