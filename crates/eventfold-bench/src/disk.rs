//! Row (f): the disk's own limit. The same bytes the engine writes per event, written with one
//! `write` + one `fdatasync` per batch, no engine, into a preallocated zero-filled file (as the
//! engine preallocates its segments: overwriting allocated blocks costs about half as much per
//! sync as growing a file, whose size change the filesystem must also journal).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;

use crate::measure::{Latencies, Measurement};

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
