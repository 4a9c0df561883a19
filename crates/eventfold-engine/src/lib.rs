//! eventfold's embedded storage engine.
//!
//! The source of truth is an append-only log of checksummed records in preallocated segment
//! files (see `FORMAT.md` beside this crate). One writer thread group-commits appends: it drains
//! a bounded queue, checks expected revisions and writes the whole group with one `write`; a
//! committer thread flushes it with one `fdatasync` (while the writer goes on with the next
//! group), and only then publishes the events to readers and wakes subscribers. The
//! indexes are derived from the log: per stream only its state stays in memory; stream →
//! revision → address and category / event type → addresses live in sorted key tables on disk
//! (one per sealed segment, merged in the background) plus a memtable for the active segment.
//! Reopening loads the latest stream-state snapshot and replays only what came after it.

mod background;
mod backup;
mod condition;
mod engine;
mod format;
#[doc(hidden)]
pub mod fuzz;
mod index;
mod indexer;
pub mod io;
mod keytable;
mod options;
mod powerloss;
mod reader;
mod recovery;
mod scavenge;
mod seen;
mod segindex;
mod segment;
mod shared;
mod snapshot;
mod subscribe;
mod verify;
mod writer;

pub use backup::{BackupFile, BackupPlan, BackupReader, is_backup_file_name};
pub use engine::{Engine, EngineStats};
pub use options::{
    APPEND_QUEUE_DEPTH_DEFAULT, Durability, EngineOptions, GROUP_COMMIT_BYTES_MAX_DEFAULT,
    SEGMENT_BYTES_DEFAULT, SNAPSHOT_EVERY_SEGMENTS_DEFAULT,
};
pub use scavenge::{ScavengeProgress, ScavengeReport};
pub use segment::LOCK_FILE;
pub use verify::{VerifyReport, verify};
