//! The background index threads. The *indexer* writes the key table of each sealed segment
//! from its frozen memtable (then swaps it in, so the memtable's memory is freed) and writes
//! stream-state snapshots. The *merger* merges adjacent tables of one size class into one
//! (LSM-style), so that a stream read asks O(log segments) tables. Everything they write is
//! derived data, written to a temporary file and renamed: a crash at any point leaves either the
//! old files or the new, and the next open sorts it out.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use crate::keytable::{self, Memtable};
use crate::shared::Shared;
use crate::snapshot::Snapshot;

/// Tables merged at once, and the ratio between size classes: a table covering `MERGE_FANOUT^k`
/// segments is of class k; `MERGE_FANOUT` tables of one class become one of the next. With
/// 4, at most 3 tables per class remain: about `3 × log4(segments)` tables in all (15 at 1,000
/// segments), and each entry is rewritten `log4(segments)` times over the store's life.
pub const MERGE_FANOUT: usize = 4;

/// Jobs queued for the indexer at most. A full queue makes the writer wait at its next seal:
/// frozen memtables (one sealed segment's entries each) are bounded by this.
pub const INDEX_JOBS_MAX: usize = 4;

/// A job for the indexer.
#[derive(Debug)]
pub enum IndexJob {
    /// Write the table of sealed segment `seg`.
    Table { seg: u32, mem: Arc<Memtable> },
    /// Write a snapshot, taken when [`Shared::epoch`] was the number given: if a scavenge
    /// swapped a segment in since, the snapshot holds its old addresses and is dropped.
    Snapshot(Snapshot, u64),
}

/// The two threads, and how to stop them.
#[derive(Debug)]
pub struct Indexer {
    pub jobs: std_mpsc::SyncSender<IndexJob>,
    stop: Arc<AtomicBool>,
    indexer: Option<JoinHandle<()>>,
    merger: Option<JoinHandle<()>>,
}

impl Indexer {
    pub fn start(shared: Arc<Shared>, sync: bool) -> Indexer {
        let (jobs, rx) = std_mpsc::sync_channel::<IndexJob>(INDEX_JOBS_MAX);
        let (wake, wakes) = std_mpsc::sync_channel::<()>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let dir = shared.dir.clone();
        let merger = {
            let shared = shared.clone();
            let stop = stop.clone();
            let dir = dir.clone();
            crate::background::spawn("eventfold-merger", move || {
                // Tables left unmerged by the last run (or built at open) first.
                merge_all(&shared, &dir, sync, &stop);
                while wakes.recv().is_ok() {
                    merge_all(&shared, &dir, sync, &stop);
                }
            })
            .ok()
        };
        let indexer = crate::background::spawn("eventfold-indexer", move || {
                for job in rx {
                    match job {
                        IndexJob::Table { seg, mem } => {
                            let bits = shared.index.read().hash_bits;
                            match keytable::write_memtable(&*shared.io, &dir, seg, &mem, bits, sync) {
                                Ok(t) => {
                                    shared.index.write().table_written(Arc::new(t));
                                    let _ = wake.try_send(());
                                }
                                Err(e) => tracing::warn!(
                                    segment = seg,
                                    error = %e,
                                    "could not write the key table; the segment's entries stay in memory and the next open rebuilds it"
                                ),
                            }
                        }
                        IndexJob::Snapshot(s, epoch) => {
                            let _m = shared.maintenance.lock();
                            if shared.epoch.load(Ordering::Acquire) != epoch {
                                tracing::debug!(segment = s.segment, "snapshot dropped: a scavenge rewrote a segment since it was taken");
                            } else if let Err(e) = s.write(&*shared.io, &dir, sync) {
                                tracing::warn!(segment = s.segment, error = %e, "could not write the stream-state snapshot; the next open replays more checkpoints");
                            }
                        }
                    }
                }
            })
            .ok();
        Indexer {
            jobs,
            stop,
            indexer,
            merger,
        }
    }

    /// Waits for the queued jobs, abandons a merge in progress (its temporary file is deleted
    /// on the next open) and stops both threads.
    pub fn stop(self) {
        let Indexer {
            jobs,
            stop,
            indexer,
            merger,
        } = self;
        drop(jobs);
        if let Some(h) = indexer {
            let _ = h.join();
        }
        // The indexer owned the merger's wake-up sender: the merger ends after its merge.
        stop.store(true, Ordering::Relaxed);
        if let Some(h) = merger {
            let _ = h.join();
        }
    }
}

fn merge_all(shared: &Shared, dir: &Path, sync: bool, stop: &AtomicBool) {
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // No scavenge replaces tables while this merge reads and replaces them.
        let _m = shared.maintenance.lock();
        let (inputs, bits) = {
            let index = shared.index.read();
            (index.merge_candidates(MERGE_FANOUT), index.hash_bits)
        };
        let Some(inputs) = inputs else { return };
        match keytable::merge(&*shared.io, dir, &inputs, bits, sync, stop) {
            Ok(t) => {
                tracing::debug!(
                    first = t.first_seg,
                    last = t.last_seg,
                    entries = t.entries,
                    "key tables merged"
                );
                let merged = Arc::new(t);
                if shared.index.write().merged(&inputs, merged.clone()) {
                    for t in &inputs {
                        if let Err(e) = shared.io.remove_file(&t.path) {
                            tracing::warn!(file = %t.path.display(), error = %e, "could not delete a merged key table; the next open deletes it");
                        }
                    }
                } else {
                    tracing::error!(file = %merged.path.display(), "merged tables are no longer in the index (a bug)");
                    return;
                }
            }
            Err(e) if stop.load(Ordering::Relaxed) => {
                tracing::debug!(error = %e, "merge abandoned at shutdown");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not merge key tables; reads ask more tables until the next open");
                return;
            }
        }
    }
}
