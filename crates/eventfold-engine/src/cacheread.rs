//! Reads the page cache answers at once stay on the caller's thread; reads that would wait for
//! the disk move to tokio's blocking pool.
//!
//! The engine's reads are synchronous `pread`s, and an async caller runs them on its runtime's
//! worker. While the store fits in memory that is the fastest place (a read of 100 cached events
//! takes ~100 µs, a hand-off to another thread would add wake-ups to it). On a store larger than
//! memory a cold read waits for the disk, once or more per read, and holds the worker all that
//! time: on a 2-core server two cold reads stall every connection, and the disk never sees
//! more than two reads at once.
//!
//! [`read`] first runs a read with every `pread` made `preadv2(…, RWF_NOWAIT)` (Linux 4.14+):
//! the kernel answers from the page cache or fails at once with `EAGAIN` (having started the
//! read-ahead). When one would wait, that attempt's result is dropped and the read runs again,
//! whole, on the blocking pool, where waiting holds up nothing else and concurrent cold reads
//! keep the disk's queue full. Reads have no side effects, so running one twice is safe; the
//! first attempt costs only the CPU it spent before it met the uncached page.
//!
//! The mode is a thread-local flag that [`pread`] (the one `pread` of the engine's read
//! paths, through [`crate::segment::read_at_most`]) consults. Where `RWF_NOWAIT` is not
//! supported (`EOPNOTSUPP`, `ENOSYS`) reads block inline as before, for the rest of the process.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use eventfold_core::{StoreError, StoreResult};
use rustix::io::{Errno, ReadWriteFlags};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reads wait for the disk (the default, and on the blocking pool).
    Wait,
    /// Reads the page cache cannot answer fail with [`io::ErrorKind::WouldBlock`].
    CacheOnly,
    /// As [`Mode::CacheOnly`], and a read has failed so: the attempt must be run again.
    Missed,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Wait) };
}

/// Set when the kernel or the file system does not support `RWF_NOWAIT`.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Reads waiting for the disk on the blocking pool at once, per process: enough to keep a
/// disk's queue full (an NVMe drive reaches its rate of 4 KiB reads near 32–64 in flight);
/// further cold reads wait for a turn as tasks, not as threads.
pub const COLD_READS_MAX: usize = 64;

static COLD_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(COLD_READS_MAX);

/// Runs `attempt` in cache-only mode on this thread; `None` when one of its reads would have
/// waited for the disk (its result is dropped).
pub fn cached<T>(attempt: impl FnOnce() -> T) -> Option<T> {
    struct Restore(Mode);
    impl Drop for Restore {
        fn drop(&mut self) {
            MODE.set(self.0);
        }
    }
    let outer = MODE.replace(Mode::CacheOnly);
    let restore = Restore(outer);
    let out = attempt();
    let missed = MODE.get() == Mode::Missed;
    drop(restore);
    if missed {
        // A nested attempt's miss is the enclosing attempt's miss too.
        if outer != Mode::Wait {
            MODE.set(Mode::Missed);
        }
        None
    } else {
        Some(out)
    }
}

/// Runs the read `f` on this thread when the page cache can answer it, else again on tokio's
/// blocking pool (inline when there is no runtime), counting that in `cold`.
pub async fn read<T, F>(cold: &AtomicU64, f: F) -> StoreResult<T>
where
    F: Fn() -> StoreResult<T> + Send + 'static,
    T: Send + 'static,
{
    if let Some(out) = cached(&f) {
        return out;
    }
    cold.fetch_add(1, Ordering::Relaxed);
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return f();
    };
    // The semaphore is never closed.
    let _turn = COLD_READS.acquire().await;
    match rt.spawn_blocking(f).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::io(
            "read from the store",
            io::Error::other("the runtime shut down during the read"),
        )),
    }
}

/// Reads into `buf` at `off` as `File::read_at` does; in cache-only mode, only what the page
/// cache holds, failing with [`io::ErrorKind::WouldBlock`] (and marking the attempt missed)
/// where nothing can be read without waiting.
pub fn pread(file: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    if MODE.get() == Mode::Wait || UNSUPPORTED.load(Ordering::Relaxed) {
        return file.read_at(buf, off);
    }
    match rustix::io::preadv2(
        file,
        &mut [io::IoSliceMut::new(buf)],
        off,
        ReadWriteFlags::NOWAIT,
    ) {
        Ok(n) => Ok(n),
        Err(Errno::AGAIN) => {
            MODE.set(Mode::Missed);
            Err(io::ErrorKind::WouldBlock.into())
        }
        Err(Errno::OPNOTSUPP | Errno::NOSYS) => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            file.read_at(buf, off)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        (dir, File::open(&path).unwrap())
    }

    #[test]
    fn a_cached_read_is_answered_in_cache_only_mode() {
        // Just written: the page cache holds it.
        let (_dir, file) = file_of(b"hello, cache");
        let got = cached(|| {
            let mut buf = [0u8; 5];
            let n = pread(&file, &mut buf, 7).unwrap();
            buf[..n].to_vec()
        });
        assert_eq!(got.as_deref(), Some(&b"cache"[..]));
        assert_eq!(MODE.get(), Mode::Wait, "the mode is restored");
    }

    #[test]
    fn a_miss_drops_the_attempt_and_nested_attempts_share_it() {
        let got = cached(|| {
            let inner = cached(|| MODE.set(Mode::Missed));
            assert!(inner.is_none());
            assert_eq!(MODE.get(), Mode::Missed, "the enclosing attempt missed too");
            1
        });
        assert_eq!(got, None);
        assert_eq!(MODE.get(), Mode::Wait);
    }

    #[test]
    fn outside_cache_only_mode_reads_wait() {
        let (_dir, file) = file_of(b"abc");
        let mut buf = [0u8; 8];
        assert_eq!(pread(&file, &mut buf, 0).unwrap(), 3);
        assert_eq!(pread(&file, &mut buf, 3).unwrap(), 0, "end of the file");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_that_misses_runs_again_on_the_blocking_pool() {
        let worker = std::thread::current().id();
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let r = runs.clone();
        let cold = AtomicU64::new(0);
        let on = read(&cold, move || {
            r.fetch_add(1, Ordering::Relaxed);
            if MODE.get() == Mode::CacheOnly {
                // As `pread` does when the page is not cached.
                MODE.set(Mode::Missed);
                return Err(StoreError::io("read", io::ErrorKind::WouldBlock.into()));
            }
            Ok(std::thread::current().id())
        })
        .await
        .unwrap();
        assert_eq!(runs.load(Ordering::Relaxed), 2);
        assert_eq!(cold.load(Ordering::Relaxed), 1);
        assert_ne!(on, worker, "the second run is on the blocking pool");
    }
}
