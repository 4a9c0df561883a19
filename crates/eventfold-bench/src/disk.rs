//! Row (f): the disk's own limit. The same bytes the engine writes per event, written with one
//! `write` + one `fdatasync` per batch, no engine, into a preallocated zero-filled file (as the
//! engine preallocates its segments: overwriting allocated blocks costs about half as much per
//! sync as growing a file, whose size change the filesystem must also journal).
//!
//! Beside it, the floor under row (g): the same open-loop schedule served by one thread doing
//! nothing but group commits on this disk (see [`group_commit_floor`]), and the same group
//! commits on a thread of their own, the appends sent and answered on others (see
//! [`group_commit_threaded`]).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::measure::{Latencies, Measurement, RateSchedule};

/// Size of the preallocated file: the engine's default segment size. Writes wrap around to
/// its start, so every write overwrites allocated, zero-filled blocks.
const FILE_BYTES: u64 = eventfold_engine::SEGMENT_BYTES_DEFAULT;

/// Writes `events` events of `record_bytes` bytes each, `batch` per `write` + `fdatasync`.
pub fn run(dir: &Path, events: u64, batch: u64, record_bytes: u64) -> anyhow::Result<Measurement> {
    let path = dir.join(format!("disk-batch-{batch}.dat"));
    let file = preallocate(&path)?;
    let buf = vec![0xA5u8; usize::try_from(batch * record_bytes).context("batch too large")?];
    anyhow::ensure!(
        (buf.len() as u64) <= FILE_BYTES,
        "a batch of {} bytes does not fit the {FILE_BYTES}-byte file",
        buf.len()
    );
    let batches = events.div_ceil(batch);
    let mut latencies = Latencies::new()?;
    let mut offset = 0u64;
    let start = Instant::now();
    for _ in 0..batches {
        if offset + buf.len() as u64 > FILE_BYTES {
            offset = 0;
        }
        let t = Instant::now();
        file.write_all_at(&buf, offset)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("cannot fdatasync {}", path.display()))?;
        latencies.record_since(t);
        offset += buf.len() as u64;
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    Ok(Measurement {
        events: batches * batch,
        elapsed,
        latency: latencies.summary(),
    })
}

/// Bytes one write of a floor (both of them) takes from its buffer; a flush carrying more
/// writes them in pieces of this size.
const FLOOR_WRITE_BYTES: usize = 1 << 20;

/// The least latency any engine that makes appends durable by group commit on this disk, one
/// flush at a time, can give row (g)'s schedule (`rate` single appends per second for `duration`, each due at
/// `start + i / rate`): one thread and no engine, which flushes, as soon as the flush before
/// ends, every append due by then (its `record_bytes` each, one `write` + one `fdatasync`),
/// and sleeps until the next is due when none is. Each append's latency runs from its due
/// time to the end of the flush that carried it. An append due while a flush runs waits for
/// that flush and for its own, so a slow flush holds every append due while it lasts: the
/// appends see the disk's flush times weighted by how long each lasts, where row (f) counts
/// each flush once.
pub fn group_commit_floor(
    dir: &Path,
    rate: f64,
    duration: Duration,
    record_bytes: u64,
) -> anyhow::Result<Measurement> {
    let schedule = RateSchedule::new(rate, duration)?;
    let path = dir.join("disk-group-commit.dat");
    let file = preallocate(&path)?;
    let (buf, record) = floor_buffer(record_bytes)?;
    let total = schedule.total();
    crate::measure::precise_sleeps();
    let mut latencies = Latencies::new()?;
    let mut offset = 0u64;
    let mut next = 0u64;
    let mut carried = 0u64;
    let start = Instant::now();
    while next < total {
        let now_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let due = schedule.due_by(now_ns);
        if due <= next {
            std::thread::sleep(Duration::from_nanos(
                schedule.due_ns(next).saturating_sub(now_ns),
            ));
            continue;
        }
        flush(
            &file,
            &path,
            &buf,
            &mut offset,
            (due - next) as usize * record,
            record,
        )?;
        let end_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for i in next..due {
            latencies.record_ns(end_ns.saturating_sub(schedule.due_ns(i)));
        }
        carried += due - next;
        next = due;
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    Ok(Measurement {
        events: carried,
        elapsed,
        latency: latencies.summary(),
    })
}

/// The buffer a floor writes from, and `record_bytes` as a size that fits one of its writes.
fn floor_buffer(record_bytes: u64) -> anyhow::Result<(Vec<u8>, usize)> {
    let record = usize::try_from(record_bytes).context("record too large")?;
    anyhow::ensure!(
        (1..=FLOOR_WRITE_BYTES).contains(&record),
        "a record of {record_bytes} bytes does not fit a write of {FLOOR_WRITE_BYTES}"
    );
    Ok((vec![0xA5u8; FLOOR_WRITE_BYTES], record))
}

/// One flush of a floor: `bytes` of records written at `offset` (in writes of whole records
/// from `buf`, wrapping to the file's start as the engine's segments would roll), then one
/// `fdatasync`.
fn flush(
    file: &File,
    path: &Path,
    buf: &[u8],
    offset: &mut u64,
    bytes: usize,
    record: usize,
) -> anyhow::Result<()> {
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() / record * record);
        if *offset + n as u64 > FILE_BYTES {
            *offset = 0;
        }
        file.write_all_at(&buf[..n], *offset)
            .with_context(|| format!("cannot write {}", path.display()))?;
        *offset += n as u64;
        left -= n;
    }
    file.sync_data()
        .with_context(|| format!("cannot fdatasync {}", path.display()))
}

/// Appends [`group_commit_threaded`] lets wait for its flushing thread before its sender
/// waits (the wait then shows as latency).
const THREADED_QUEUE_MAX: usize = 1 << 16;

/// Row (g)'s schedule through the same group commits as [`group_commit_floor`], made on a
/// thread of their own while the appends are sent from another and answered on a third: the
/// sender keeps the schedule and queues each append as it falls due, the flushing thread
/// takes everything queued, writes and flushes it as one group and hands the group on, and
/// the answering thread takes each group and records, per append, its due time to then. No
/// engine and no async runtime: the fewest thread crossings an engine serving callers on
/// their own threads has (one to the thread that flushes, one back). Its distance from the
/// floor is what answering an append on another thread than the one that flushed it costs on
/// this machine.
pub fn group_commit_threaded(
    dir: &Path,
    rate: f64,
    duration: Duration,
    record_bytes: u64,
) -> anyhow::Result<Measurement> {
    let schedule = RateSchedule::new(rate, duration)?;
    let path = dir.join("disk-group-commit-threaded.dat");
    let file = preallocate(&path)?;
    let (buf, record) = floor_buffer(record_bytes)?;
    let total = schedule.total();
    let (to_flusher, appends) = std::sync::mpsc::sync_channel::<u64>(THREADED_QUEUE_MAX);
    let (to_answerer, groups) = std::sync::mpsc::channel::<Vec<u64>>();
    let start = Instant::now();
    let flusher = {
        let path = path.clone();
        std::thread::Builder::new()
            .name("bench-flusher".into())
            .spawn(move || -> anyhow::Result<()> {
                let mut offset = 0u64;
                while let Ok(first) = appends.recv() {
                    let mut group = vec![first];
                    group.extend(appends.try_iter());
                    flush(
                        &file,
                        &path,
                        &buf,
                        &mut offset,
                        group.len() * record,
                        record,
                    )?;
                    if to_answerer.send(group).is_err() {
                        break;
                    }
                }
                Ok(())
            })
            .context("cannot start the flushing thread")?
    };
    let answerer = std::thread::Builder::new()
        .name("bench-answerer".into())
        .spawn(move || -> anyhow::Result<(Latencies, u64)> {
            let mut latencies = Latencies::new()?;
            let mut answered = 0u64;
            while let Ok(group) = groups.recv() {
                let now_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                for i in &group {
                    latencies.record_ns(now_ns.saturating_sub(schedule.due_ns(*i)));
                }
                answered += group.len() as u64;
            }
            Ok((latencies, answered))
        })
        .context("cannot start the answering thread")?;
    let due_at = |i| start + Duration::from_nanos(schedule.due_ns(i));
    // A send fails only when the flushing thread stopped: its error is the one to report.
    let _ = crate::measure::paced(total, due_at, |i, _| to_flusher.send(i));
    drop(to_flusher);
    let flushed = flusher
        .join()
        .map_err(|_| anyhow::anyhow!("the flushing thread panicked"));
    let answered = answerer
        .join()
        .map_err(|_| anyhow::anyhow!("the answering thread panicked"));
    let elapsed = start.elapsed();
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    flushed??;
    let (latencies, answered) = answered??;
    Ok(Measurement {
        events: answered,
        elapsed,
        latency: latencies.summary(),
    })
}

/// Creates the file, fills it with zeros, and makes it and its directory entry durable.
fn preallocate(path: &PathBuf) -> anyhow::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = FILE_BYTES;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])
            .with_context(|| format!("cannot zero-fill {}", path.display()))?;
        left -= n as u64;
    }
    file.sync_all()
        .with_context(|| format!("cannot fsync {}", path.display()))?;
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot fsync the directory {}", parent.display()))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every append of the schedule is carried by exactly one flush, none waits longer than
    /// the run, and the file is gone afterwards.
    #[test]
    fn the_floor_carries_each_append_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = group_commit_floor(dir.path(), 2_000.0, Duration::from_millis(100), 368)
            .expect("the floor runs");
        assert_eq!(m.events, 200);
        let l = m.latency.expect("latencies recorded");
        assert!(l.p50_ns >= 1 && l.max_ns <= m.elapsed.as_nanos() as u64);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    /// The threaded floor answers every append of the schedule once, each after its due time
    /// and within the run, and leaves no file behind.
    #[test]
    fn the_threaded_floor_answers_each_append_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = group_commit_threaded(dir.path(), 2_000.0, Duration::from_millis(100), 368)
            .expect("the threaded floor runs");
        assert_eq!(m.events, 200);
        let l = m.latency.expect("latencies recorded");
        assert!(l.p50_ns >= 1 && l.max_ns <= m.elapsed.as_nanos() as u64);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }
}
