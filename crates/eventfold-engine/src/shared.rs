//! The state the writer, the readers and the subscriptions share: the indexes, the segment
//! files, the committed watermark and the poison flag. It sits below every other module of the
//! engine's runtime: `writer`, `reader` and `subscribe` build on it, and the `engine` façade
//! builds on them; nothing here knows any of them.

use std::path::PathBuf;
use std::sync::Arc;

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
}
