//! An [`EventStore`] that keeps everything in memory: the whole contract (atomic batches,
//! expected revisions, idempotent retries within a window of event ids, stream metadata and retention, soft and hard
//! deletes, `$all` with filters, listing, limits, catch-up-then-live subscriptions), held to
//! the same conformance suite as the engine and the HTTP client.
//!
//! It has no disk and no threads of its own: every call runs on the caller's task, under one
//! lock, and subscriptions are woken by a `tokio::sync::watch`. That makes it the store for
//! tests that only need *a* store, including tests that run on paused tokio time. Nothing
//! survives the last clone being dropped.
//!
//! Times follow the engine: an event's timestamp is the wall-clock commit time (never going
//! backwards), or for an import (`append_imported`) the one it carries (never below the last
//! event's), and `max_age_seconds` is measured against the wall clock at read time, so
//! paused tokio time does not age events.

mod state;
mod subscribe;

use std::sync::Arc;

use eventfold_core::{
    AllSlice, AppendCondition, AppendResult, DeleteMode, EventFilter, EventStore,
    EventSubscription, ExpectedRevision, IdempotencyWindow, ImportBatch, KnownStreams, Limits,
    ListStreams, NewEvent, Position, ReadAll, ReadStream, Revision, StoreResult, StreamCursor,
    StreamInfo, StreamList, StreamMetadata, StreamName, StreamSlice, SubscribeFrom, Timestamp,
};
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::state::State;
use crate::subscribe::Target;

/// An in-memory event store. Cheap to clone; every clone is the same store, which lives until
/// the last clone (and the last subscription) is dropped.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: RwLock<State>,
    /// The committed watermark (the next position), sent after every write.
    committed: watch::Sender<u64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store with the contract's default limits.
    pub fn new() -> Self {
        MemoryStore::with_limits(Limits::DEFAULT)
    }

    /// An empty store enforcing `limits`, with the default idempotency window.
    pub fn with_limits(limits: Limits) -> Self {
        MemoryStore::with_window(limits, IdempotencyWindow::DEFAULT)
    }

    /// An empty store enforcing `limits` that recognizes retries within `window` (see
    /// [`EventStore::append`]; [`IdempotencyWindow::OFF`]: the stream's last batch only).
    pub fn with_window(limits: Limits, window: IdempotencyWindow) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                state: RwLock::new(State::new(limits, window)),
                committed: watch::Sender::new(0),
            }),
        }
    }

    /// The limits the store enforces.
    pub fn limits(&self) -> Limits {
        self.inner.state.read().limits()
    }

    /// Runs a write under the lock, then wakes the subscribers.
    fn write<T>(&self, f: impl FnOnce(&mut State) -> StoreResult<T>) -> StoreResult<T> {
        let mut state = self.inner.state.write();
        let r = f(&mut state);
        // Sent under the lock, so the watermark never goes backwards.
        self.inner.committed.send_if_modified(|c| {
            let next = state.next_position();
            let moved = *c != next;
            *c = next;
            moved
        });
        r
    }
}

#[async_trait::async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        self.limits().check_batch(&events)?;
        self.write(|s| s.append(stream, expected, events, None, None))
    }

    async fn append_with_condition(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> StoreResult<AppendResult> {
        self.limits().check_batch(&events)?;
        // Under the one lock: no append comes between the check and the write.
        self.write(|s| s.append(stream, expected, events, None, Some(&condition)))
    }

    async fn append_imported(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        batch: ImportBatch,
    ) -> StoreResult<AppendResult> {
        let (events, timestamps): (Vec<NewEvent>, Vec<Timestamp>) =
            batch.events.into_iter().unzip();
        self.limits().check_batch(&events)?;
        self.write(|s| {
            s.append(
                stream,
                expected,
                events,
                Some((batch.first_revision, timestamps)),
                None,
            )
        })
    }

    async fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice> {
        self.inner.state.read().read_stream(stream, read)
    }

    async fn read_all(&self, read: ReadAll) -> StoreResult<AllSlice> {
        self.inner.state.read().read_all(&read)
    }

    fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: SubscribeFrom<Revision>,
    ) -> EventSubscription {
        let first = from.first(|| Revision(self.inner.state.read().next_revision(stream)));
        let target = Target::Stream {
            stream: stream.clone(),
            cursor: StreamCursor::new(first),
        };
        subscribe::run(self.inner.clone(), target)
    }

    fn subscribe_all(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
    ) -> EventSubscription {
        let next = from
            .first(|| Position(self.inner.state.read().next_position()))
            .0;
        subscribe::run(self.inner.clone(), Target::All { filter, next })
    }

    async fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo> {
        self.inner.state.read().stream_info(stream)
    }

    async fn list_known_streams(&self, list: ListStreams) -> StoreResult<KnownStreams> {
        self.inner.state.read().list_known_streams(&list)
    }

    async fn list_streams(&self, list: ListStreams) -> StoreResult<StreamList> {
        self.inner.state.read().list_streams(&list)
    }

    async fn get_metadata(&self, stream: &StreamName) -> StoreResult<StreamMetadata> {
        self.inner.state.read().get_metadata(stream)
    }

    async fn set_metadata(&self, stream: &StreamName, metadata: StreamMetadata) -> StoreResult<()> {
        // Stored metadata counts against the per-event limit. The engine adds its record
        // overhead (a few hundred bytes) before the same check, so near the limit it refuses
        // metadata this store accepts.
        let bytes = serde_json::to_vec(&metadata).map_or(0, |v| v.len());
        self.limits().check_event_bytes(bytes)?;
        self.write(|s| s.set_metadata(stream, metadata))
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    ) -> StoreResult<()> {
        self.write(|s| s.delete(stream, expected, mode))
    }
}
