use std::sync::Arc;

use eventfold_core::{IdempotencyWindow, Limits};

use crate::io::{FileIo, OsIo};

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After `fdatasync` of the batch that holds it: survives kill -9 and power loss. The default.
    #[default]
    Fsync,
    /// After the write reaches the OS page cache, without `fdatasync`: survives kill -9 of the
    /// process but NOT power loss or an OS crash. For tests and throw-away data only.
    NoSyncUnsafe,
}

/// Default segment size: 64 MiB. Big enough that rolling over (rename + directory fsync) is
/// rare, small enough that zero-filling the next one ahead of the writer takes ~0.1 s and that
/// the active segment, the only one scanned on reopen, scans in well under a second.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// Default bound of the append queue, in appends. Callers beyond it wait (back-pressure); 4,096
/// covers thousands of concurrent writers while bounding queued memory to 4,096 batches.
pub const APPEND_QUEUE_DEPTH_DEFAULT: usize = 4096;

/// Default bound of one group commit, in bytes of records: 8 MiB keeps one `write` +
/// `fdatasync` near the disk's bandwidth sweet spot (~1,000-10,000 events of 256 B per sync)
/// without one group delaying the next by more than a few milliseconds.
pub const GROUP_COMMIT_BYTES_MAX_DEFAULT: usize = 8 << 20;

/// Default snapshot interval: a stream-state snapshot at every 8th sealed segment (512 MiB of
/// log at the default segment size, ~1.8 M events of 256 B). Opening replays the index
/// checkpoints of at most 7 sealed segments after the snapshot (~1.6 M records, well under a
/// second), and a snapshot (O(streams) + 0.25 B per event of sparse map) is written rarely
/// enough that its cost does not show in the append rate.
pub const SNAPSHOT_EVERY_SEGMENTS_DEFAULT: u32 = 8;

/// How to open an [`crate::Engine`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// When appends are acknowledged.
    pub durability: Durability,
    /// Size of each segment file, preallocated and zero-filled. At least 64 KiB and at least
    /// one largest possible batch.
    pub segment_bytes: u64,
    /// The contract's size limits.
    pub limits: Limits,
    /// Bound of the append queue, in appends.
    pub append_queue_depth: usize,
    /// Bound of one group commit, in bytes.
    pub group_commit_bytes_max: usize,
    /// The I/O every file mutation goes through (`OsIo`; replace to inject faults or model
    /// power loss in tests, see [`crate::io`]).
    pub io: Arc<dyn FileIo>,
    /// A stream-state snapshot is written when every this-many-th segment is sealed.
    pub snapshot_every_segments: u32,
    /// How far back a retry is recognized by its event ids (see `EventStore::append`): held by
    /// the writer in memory (see [`eventfold_core::SeenIds`] for the bytes per id) and read
    /// back from the log's tail at open. [`IdempotencyWindow::OFF`]: only a stream's last
    /// batch.
    pub idempotency: IdempotencyWindow,
    /// Bits of the 64-bit hash that index keys keep (at most 62). Only tests lower it, to make
    /// hash collisions common; tables built with another width are rebuilt on open.
    #[doc(hidden)]
    pub index_hash_bits: u32,
    /// Whether the writer flushes, publishes and answers a group of one request itself when
    /// the committer has committed every group before it and no other request waits (the
    /// default). At low load the committer's pipeline then has nothing to overlap, and
    /// handing the group over only adds a thread wake-up to the append; under load (groups of
    /// several requests, or requests waiting) the writer still hands groups over and writes
    /// the next ones during each flush. `false` hands every group to the committer: tests use
    /// it to hold a flush while the writer goes on.
    pub inline_commit: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            durability: Durability::Fsync,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            limits: Limits::DEFAULT,
            append_queue_depth: APPEND_QUEUE_DEPTH_DEFAULT,
            group_commit_bytes_max: GROUP_COMMIT_BYTES_MAX_DEFAULT,
            io: Arc::new(OsIo),
            snapshot_every_segments: SNAPSHOT_EVERY_SEGMENTS_DEFAULT,
            idempotency: IdempotencyWindow::DEFAULT,
            index_hash_bits: crate::keytable::KEY_HASH_BITS_MAX,
            inline_commit: true,
        }
    }
}

impl EngineOptions {
    /// Options for tests: no fsync, small segments (4 MiB) so that roll-over is exercised, and
    /// limits shrunk to fit them (1,000 events and 1 MiB per append, 256 KiB per event).
    pub fn for_tests() -> Self {
        EngineOptions {
            durability: Durability::NoSyncUnsafe,
            segment_bytes: 4 << 20,
            limits: Limits {
                event_bytes_max: 256 << 10,
                batch_events_max: 1000,
                batch_bytes_max: 1 << 20,
                read_limit_max: Limits::DEFAULT.read_limit_max,
            },
            ..EngineOptions::default()
        }
    }
}
