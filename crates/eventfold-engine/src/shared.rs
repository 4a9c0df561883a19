//! The state the writer, the readers and the subscriptions share: the indexes, the segment
//! files, the committed watermark and the poison flag. It sits below every other module of the
//! engine's runtime: `writer`, `reader` and `subscribe` build on it, and the `engine` façade
//! builds on them; nothing here knows any of them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use eventfold_core::Limits;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::index::Index;
use crate::io::FileIo;
use crate::segment::Segments;

/// State shared by the writer, readers and subscriptions.
#[derive(Debug)]
pub struct Shared {
    pub dir: PathBuf,
    pub index: RwLock<Index>,
    pub segments: Segments,
    pub committed: watch::Receiver<u64>,
    pub poisoned: Mutex<Option<String>>,
    pub limits: Limits,
    pub segment_bytes: u64,
    /// Every file mutation goes through it (see [`crate::io`]).
    pub io: Arc<dyn FileIo>,
    /// Whether files are flushed (`Durability::Fsync`).
    pub sync: bool,
    /// Held for reading by every read from the copying of addresses out of the index to the
    /// reading of their records (and by a backup while it takes its cut); for writing by a
    /// scavenge while it swaps a rewritten segment in, so that no reader reads a new file at
    /// an address of the old one.
    pub gate: RwLock<()>,
    /// Held while key tables or snapshots on disk are replaced or written: by the merger for
    /// each merge, by the indexer for each snapshot, and by a scavenge for each segment it
    /// rewrites.
    pub maintenance: Mutex<()>,
    /// Held for the whole of a scavenge: one at a time.
    pub scavenging: Mutex<()>,
    /// Counts the segments scavenges swapped in: a snapshot taken before one (holding the old
    /// file's addresses) is not written.
    pub epoch: AtomicU64,
    /// Set when the engine stops: a scavenge commits no further segment.
    pub closed: AtomicBool,
    /// Ids in the writer's idempotency window, and the heap bytes it holds (for
    /// [`crate::EngineStats`]; the writer owns the window).
    pub seen_ids: AtomicU64,
    pub seen_bytes: AtomicU64,
    /// The last position of each tag's and type's events, as far as conditional appends need
    /// it (see [`crate::condition`]); the writer moves it as it sequences events.
    pub last_seen: crate::condition::LastSeen,
}
