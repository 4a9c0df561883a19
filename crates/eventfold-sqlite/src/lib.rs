//! SQLite read models for eventfold, with the checkpoint in the read model's own transaction.
//!
//! - [`Sqlite`]: one connection to a database file (WAL mode), shared, used on tokio's
//!   blocking threads.
//! - [`SqliteProjection`] + [`SqliteReadModel`]: the projection gets a
//!   [`rusqlite::Transaction`] for each batch; the checkpoint row is written in the same
//!   transaction and committed with it, so a crash at any point leaves the read model and its
//!   checkpoint in step: a restart neither skips an event nor applies one twice. Drive it with
//!   [`eventfold::ProjectionProcessor`], or feed it from a message broker with
//!   [`eventfold::TransportProjection`]: then the revision of the last event applied per stream
//!   (`eventfold_stream_revisions`) is written in each event's transaction instead.
//! - [`SqliteCheckpoints`]: an [`eventfold::CheckpointStore`] in the same table.
//! - [`SqliteProcessedIds`]: an [`eventfold::ProcessedIds`] store with a time-to-live per id,
//!   for idempotent handlers whose effects are not in this database.
//!
//! # Durability: `synchronous = NORMAL`
//!
//! The connection runs in WAL mode with `synchronous = NORMAL`: a commit is not fsynced, the
//! WAL is at checkpoints. A crash of the process loses nothing; a power loss may lose the last
//! few commits but never breaks one in half, and since every commit holds both the read model's
//! changes and the checkpoint, what is lost is lost together: the processor resumes from the
//! older checkpoint and applies those events again, once. `FULL` would add an fsync to every
//! batch for no gain in correctness here. A database that must not lose a processed-id mark
//! across power loss can set `PRAGMA synchronous = FULL` through [`Sqlite::call`].

mod checkpoints;
mod db;
mod processed;
mod read_model;

pub use checkpoints::SqliteCheckpoints;
pub use db::{Sqlite, SqliteError};
pub use processed::SqliteProcessedIds;
pub use read_model::{SqliteProjection, SqliteReadModel};

pub use rusqlite;
