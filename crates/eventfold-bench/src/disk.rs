//! Row (f): the disk's own limit. The same bytes the engine writes per event, written with one
//! `write` + one `fdatasync` per batch, no engine, into a preallocated zero-filled file (as the
//! engine preallocates its segments: overwriting allocated blocks costs about half as much per
//! sync as growing a file, whose size change the filesystem must also journal).
//!
//! Beside it, the floor under row (g): the same open-loop schedule served by one thread doing
//! nothing but group commits on this disk (see [`Floor::alone`]), and the same group
//! commits on a thread of their own, the appends sent and answered on others (see
//! [`Floor::threaded`]).

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

/// Row (g)'s schedule (`rate` single appends per second for `duration`, each due at `start +
/// i / rate`) served by group commits alone, on this disk, with no engine: the floor under
/// row (g), made [`Floor::alone`] or [`Floor::threaded`]. Holds the schedule, its
/// preallocated file in `dir`, the buffer whole records of `record_bytes` are written from,
/// the record's size and where the next flush writes.
pub struct Floor {
    schedule: RateSchedule,
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    record: usize,
    /// Where the next flush writes.
    offset: u64,
}

impl Floor {
    /// Checks the record's size against a write's, then makes the floor's file in `dir`
    /// (preallocated and zero-filled as the engine's segments are).
    pub fn new(
        dir: &Path,
        rate: f64,
        duration: Duration,
        record_bytes: u64,
    ) -> anyhow::Result<Floor> {
        let schedule = RateSchedule::new(rate, duration)?;
        let record = usize::try_from(record_bytes).context("record too large")?;
        anyhow::ensure!(
            (1..=FLOOR_WRITE_BYTES).contains(&record),
            "a record of {record_bytes} bytes does not fit a write of {FLOOR_WRITE_BYTES}"
        );
        let path = dir.join("disk-group-commit.dat");
        let file = preallocate(&path)?;
        Ok(Floor {
            schedule,
            path,
            file,
            buf: vec![0xA5u8; FLOOR_WRITE_BYTES],
            record,
            offset: 0,
        })
    }

    /// The least latency any engine that makes appends durable by group commit on this disk, one
    /// flush at a time, can give the schedule: one thread and no engine, which flushes, as soon as
    /// the flush before ends, every append due by then (a record each, one `write` + one
    /// `fdatasync`), and sleeps until the next is due when none is. Each append's latency runs from
    /// its due time to the end of the flush that carried it. An append due while a flush runs waits
    /// for that flush and for its own, so a slow flush holds every append due while it lasts: the
    /// appends see the disk's flush times weighted by how long each lasts, where row (f) counts
    /// each flush once.
    pub fn alone(mut self) -> anyhow::Result<Measurement> {
        let schedule = self.schedule;
        let total = schedule.total();
        crate::measure::precise_sleeps();
        let mut latencies = Latencies::new()?;
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
            self.flush(due - next)?;
            let end_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            for i in next..due {
                latencies.record_ns(end_ns.saturating_sub(schedule.due_ns(i)));
            }
            carried += due - next;
            next = due;
        }
        let elapsed = start.elapsed();
        self.remove()?;
        Ok(Measurement {
            events: carried,
            elapsed,
            latency: latencies.summary(),
        })
    }

    /// Row (g)'s schedule through the same group commits as [`Floor::alone`], made on a thread of
    /// their own while the appends are sent from another and answered on a third: the sender keeps
    /// the schedule and queues each append as it falls due, the flushing thread takes everything
    /// queued, writes and flushes it as one group and hands the group on, and the answering thread
    /// takes each group and records, per append, its due time to then. No engine and no async
    /// runtime: the fewest thread crossings an engine serving callers on their own threads has (one
    /// to the thread that flushes, one back). Its distance from the floor is what answering an
    /// append on another thread than the one that flushed it costs on this machine.
    pub fn threaded(mut self) -> anyhow::Result<Measurement> {
        let schedule = self.schedule;
        let total = schedule.total();
        let (to_flusher, appends) = std::sync::mpsc::sync_channel::<u64>(THREADED_QUEUE_MAX);
        let (to_answerer, groups) = std::sync::mpsc::channel::<Vec<u64>>();
        let start = Instant::now();
        // The floor goes to the flushing thread and comes back with its outcome.
        let flusher = std::thread::Builder::new()
            .name("bench-flusher".into())
            .spawn(move || -> (Floor, anyhow::Result<()>) {
                let mut flushed = Ok(());
                while let Ok(first) = appends.recv() {
                    let mut group = vec![first];
                    group.extend(appends.try_iter());
                    flushed = self.flush(group.len() as u64);
                    if flushed.is_err() || to_answerer.send(group).is_err() {
                        break;
                    }
                }
                (self, flushed)
            })
            .context("cannot start the flushing thread")?;
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
        let (floor, flushed) = flusher
            .join()
            .map_err(|_| anyhow::anyhow!("the flushing thread panicked"))?;
        let answered = answerer
            .join()
            .map_err(|_| anyhow::anyhow!("the answering thread panicked"));
        let elapsed = start.elapsed();
        floor.remove()?;
        flushed?;
        let (latencies, answered) = answered??;
        Ok(Measurement {
            events: answered,
            elapsed,
            latency: latencies.summary(),
        })
    }

    /// One flush: `records` records written at the floor's offset (in writes of whole records
    /// from its buffer, wrapping to the file's start as the engine's segments would roll),
    /// then one `fdatasync`.
    fn flush(&mut self, records: u64) -> anyhow::Result<()> {
        let path = &self.path;
        let mut left = usize::try_from(records).context("too many records")? * self.record;
        while left > 0 {
            let n = left.min(self.buf.len() / self.record * self.record);
            if self.offset + n as u64 > FILE_BYTES {
                self.offset = 0;
            }
            self.file
                .write_all_at(&self.buf[..n], self.offset)
                .with_context(|| format!("cannot write {}", path.display()))?;
            self.offset += n as u64;
            left -= n;
        }
        self.file
            .sync_data()
            .with_context(|| format!("cannot fdatasync {}", path.display()))
    }

    /// Closes and removes the floor's file.
    fn remove(self) -> anyhow::Result<()> {
        let Floor { file, path, .. } = self;
        drop(file);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))
    }
}

/// Appends [`Floor::threaded`] lets wait for its flushing thread before its sender
/// waits (the wait then shows as latency).
const THREADED_QUEUE_MAX: usize = 1 << 16;

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

    /// Both floors answer every append of the schedule once (the one-thread floor with exactly
    /// one flush each), none later than the run's end, and leave no file behind.
    #[test]
    fn each_floor_answers_each_append_once() {
        type Way = fn(Floor) -> anyhow::Result<Measurement>;
        let ways: [(&str, Way); 2] = [("alone", Floor::alone), ("threaded", Floor::threaded)];
        for (way, run) in ways {
            let dir = tempfile::tempdir().expect("tempdir");
            let m = Floor::new(dir.path(), 2_000.0, Duration::from_millis(100), 368)
                .and_then(run)
                .unwrap_or_else(|e| panic!("the floor {way} fails: {e:#}"));
            assert_eq!(m.events, 200, "{way}");
            let l = m.latency.expect("latencies recorded");
            assert!(
                l.p50_ns >= 1 && l.max_ns <= m.elapsed.as_nanos() as u64,
                "{way}"
            );
            assert_eq!(
                std::fs::read_dir(dir.path()).expect("dir").count(),
                0,
                "{way}"
            );
        }
    }
}
