//! eventfold's embedded storage engine.
//!
//! The source of truth is an append-only log of checksummed records in preallocated segment
//! files (see `FORMAT.md` beside this crate). One writer thread group-commits appends: it drains
//! a bounded queue, checks expected revisions, writes the whole group with one `write` and one
//! `fdatasync`, and only then publishes the events to readers and wakes subscribers. The
//! indexes (stream → revisions, category, event type, position) live in memory, are derived
//! from the log, and are checkpointed per sealed segment so that reopening reads only the
//! active segment.

mod engine;
mod format;
mod index;
pub mod io;
mod options;
mod reader;
mod recovery;
mod segindex;
mod segment;
mod shared;
mod subscribe;
mod verify;
mod writer;

pub use engine::{Engine, EngineStats};
pub use options::{
    APPEND_QUEUE_DEPTH_DEFAULT, Durability, EngineOptions, GROUP_COMMIT_BYTES_MAX_DEFAULT,
    SEGMENT_BYTES_DEFAULT,
};
pub use verify::{VerifyReport, verify};
