use futures::stream::BoxStream;

use crate::error::StoreResult;
use crate::event::NewEvent;
use crate::expected::ExpectedRevision;
use crate::ids::{Position, Revision};
use crate::metadata::StreamMetadata;
use crate::names::StreamName;
use crate::read::{
    AllSlice, EventFilter, ListStreams, ReadAll, ReadStream, StreamList, StreamSlice, SubscribeFrom,
};

/// What an append wrote (or, for an idempotent retry, had written the first time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream appended to.
    pub stream: StreamName,
    /// Revision of the first event of the batch.
    pub first_revision: Revision,
    /// Revision of the last event of the batch.
    pub last_revision: Revision,
    /// Position of the first event of the batch.
    pub first_position: Position,
    /// Position of the last event of the batch.
    pub last_position: Position,
    /// `true` when the batch was a retry of the stream's most recent batch: nothing was written
    /// and the fields above are those of the original append.
    pub idempotent_replay: bool,
}

/// What is known about one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamInfo {
    /// The stream.
    pub stream: StreamName,
    /// Its last revision.
    pub last_revision: Revision,
    /// The position of its last event.
    pub last_position: Position,
    /// How many of its events can still be read (after retention rules and deletes).
    pub event_count: u64,
    /// Its metadata.
    pub metadata: StreamMetadata,
}

/// How to delete a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteMode {
    /// Reads answer not-found; appending again continues the revisions after the last one.
    Soft,
    /// A tombstone: every later read or append is refused as deleted, forever.
    Hard,
}

/// A live subscription: history first, then live events, in order, with no gap and no
/// duplicate at the switch-over. It ends only with an error (or when dropped).
pub type EventSubscription = BoxStream<'static, StoreResult<crate::event::RecordedEvent>>;

/// An event store. One trait, many implementations (the embedded engine, the HTTP client,
/// PostgreSQL), all held to the same conformance suite (`eventfold-conformance`).
///
/// Every method that writes answers only once the write is durable.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically (all or none, contiguous revisions), after
    /// checking `expected`. A batch whose ids are exactly the stream's most recent batch is an
    /// idempotent retry: nothing is written and the first result comes back with
    /// `idempotent_replay` set; this is decided before `expected` is checked.
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult>;

    /// Reads a page of one stream. `StreamNotFound` when it does not exist or was
    /// soft-deleted with nothing after; `StreamDeleted` after a hard delete.
    async fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice>;

    /// Reads a page of the global log, filtered. Events that can no longer be read from their
    /// stream are not returned.
    async fn read_all(&self, read: ReadAll) -> StoreResult<AllSlice>;

    /// Subscribes to one stream: its events from `from`, then live ones.
    fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: SubscribeFrom<Revision>,
    ) -> EventSubscription;

    /// Subscribes to the global log: matching events from `from`, then live ones.
    fn subscribe_all(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
    ) -> EventSubscription;

    /// What is known about one stream. `StreamNotFound` / `StreamDeleted` as for reads.
    async fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo>;

    /// Lists the names of existing streams (not deleted) in byte order.
    async fn list_streams(&self, list: ListStreams) -> StoreResult<StreamList>;

    /// The stream's metadata (the default when none was set). `StreamDeleted` after a hard delete.
    async fn get_metadata(&self, stream: &StreamName) -> StoreResult<StreamMetadata>;

    /// Replaces the stream's metadata. `StreamDeleted` after a hard delete.
    async fn set_metadata(&self, stream: &StreamName, metadata: StreamMetadata) -> StoreResult<()>;

    /// Whether the store can take writes now: `Err` (with why) when it cannot, for example after
    /// a storage failure, or while a remote store's database does not answer. Reads may still
    /// work. May ask the backend (a round trip), so it is for readiness checks, not every request.
    async fn health(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Deletes a stream after checking `expected`. Deleting a stream that does not exist is
    /// `StreamNotFound` (soft) or allowed (hard, which reserves the name).
    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    ) -> StoreResult<()>;
}
