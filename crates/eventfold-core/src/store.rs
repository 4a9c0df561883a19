use futures::stream::BoxStream;

use crate::error::StoreResult;
use crate::event::{NewEvent, Timestamp};
use crate::expected::ExpectedRevision;
use crate::ids::{Position, Revision};
use crate::metadata::StreamMetadata;
use crate::names::StreamName;
use crate::query::AppendCondition;
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
    /// `true` when the batch was a retry of an earlier append to the stream (see
    /// [`EventStore::append`]): nothing was written and the fields above are those of the
    /// original append.
    pub idempotent_replay: bool,
}

/// A batch to import (see [`EventStore::append_imported`]): events with the commit times they
/// had in the store they come from, and the revision the first of them had there.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportBatch {
    /// The revision the batch's first event had in the source store; the batch is refused
    /// unless it lands there.
    pub first_revision: Revision,
    /// The events, each with its original commit time, in revision order.
    pub events: Vec<(NewEvent, Timestamp)>,
}

/// One stream the store knows, deleted or not, as a move to another store needs it (see
/// [`EventStore::list_known_streams`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KnownStream {
    /// The stream.
    pub stream: StreamName,
    /// Its next revision, soft-delete point and tombstone.
    pub head: crate::head::StreamHead,
    /// Its metadata (kept across a soft delete).
    pub metadata: StreamMetadata,
}

/// A page of [`KnownStream`]s in byte order of their names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KnownStreams {
    /// The streams.
    pub streams: Vec<KnownStream>,
    /// The name to pass as `after` for the next page, or `None` at the end.
    pub next: Option<StreamName>,
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

/// The outcome of an append whose place among the store's appends is already fixed
/// ([`EventStore::append_sequenced`]).
pub type PendingAppend = futures::future::BoxFuture<'static, StoreResult<AppendResult>>;

/// An event store. One trait, many implementations (the embedded engine, the HTTP client,
/// PostgreSQL), all held to the same conformance suite (`eventfold-conformance`).
///
/// Every method that writes answers only once the write is durable.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically (all or none, contiguous revisions), after
    /// checking `expected`.
    ///
    /// Idempotency by event id, decided before `expected` is checked (a hard-deleted stream
    /// still refuses first):
    /// - A batch whose ids are exactly those of one earlier append to the same stream (the same
    ///   ids, in the same order, and no more) is a retry: nothing is written and the original
    ///   append's result (its revisions and positions) comes back with `idempotent_replay` set,
    ///   whatever was appended since, as long as that append is inside the store's
    ///   [`IdempotencyWindow`](crate::IdempotencyWindow): its events among the log's newest
    ///   `events` positions and committed less than `max_age` ago. A retry racing its original
    ///   (both queued at once) is answered as a retry too: one of them writes.
    /// - Beyond the window, only a repeat of the stream's most recent append is recognized
    ///   (what every store did before the window; `IdempotencyWindow::OFF` keeps only that).
    /// - A batch that carries an id seen inside the window without being such a retry (a part of
    ///   an earlier batch, more than it, ids of two appends, ids appended to another stream), or
    ///   the same id twice, is refused with
    ///   [`StoreError::DuplicateEventId`](crate::StoreError::DuplicateEventId): nothing is
    ///   written.
    ///
    /// An id outside the window may be appended again as a new event: ids are not unique
    /// forever.
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult>;

    /// Appends like [`EventStore::append`], and fails with
    /// [`StoreError::AppendConditionFailed`] (writing nothing) when an event matching the
    /// condition's query was appended after its `after` position (every event, with no
    /// `after`): a decision made on the events a read by that query returned stays valid only
    /// if none of them changed, which is what a Dynamic Consistency Boundary checks instead of
    /// one stream's revision. The check is atomic with the write: no append, of any stream,
    /// can slip between them. It counts every event appended, whether or not reads can still
    /// return it (see [`AppendCondition`]).
    ///
    /// Rules are checked in this order: a retry of the stream's last batch is a replay (so a
    /// retry after an unknown outcome succeeds even though its own events now match), then
    /// `expected`, then the condition.
    ///
    /// No default: every store checks conditions (the conformance suite holds each to it), and
    /// a store that wraps another forwards it, so a wrapper cannot turn conditional appends
    /// off by forgetting them. A store that could not check a condition atomically with its
    /// write would answer [`StoreError::Unsupported`] rather than append unchecked.
    ///
    /// [`StoreError::AppendConditionFailed`]: crate::StoreError::AppendConditionFailed
    /// [`StoreError::Unsupported`]: crate::StoreError::Unsupported
    async fn append_with_condition(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> StoreResult<AppendResult>;

    /// Starts an append ([`EventStore::append`], or
    /// [`EventStore::append_with_condition`] with a condition) in two steps: the returned
    /// future resolves once the append's place among the store's appends is fixed, to a
    /// [`PendingAppend`] that resolves to its outcome. An append started after that point is
    /// judged after this one, as if this one had already succeeded or failed: appends to one
    /// stream sent this way one after the other land in that order, and may still share a
    /// group commit (a connection's pipeline, `POST /appends`, relies on it).
    ///
    /// The default runs the whole append before it resolves: correct for every store, and one
    /// append at a time per stream. A store that queues its appends in order overrides it.
    async fn append_sequenced(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> PendingAppend {
        let r = match condition {
            None => self.append(stream, expected, events).await,
            Some(c) => {
                self.append_with_condition(stream, expected, events, c)
                    .await
            }
        };
        Box::pin(std::future::ready(r))
    }

    /// Reads a page of one stream. `StreamNotFound` when it does not exist or was
    /// soft-deleted with nothing after; `StreamDeleted` after a hard delete. With
    /// `ReadStream::until`, only the events committed at or before it.
    async fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice>;

    /// Reads a page of the global log, filtered. Events that can no longer be read from their
    /// stream are not returned. With `ReadAll::until`, only the events committed at or
    /// before it.
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

    /// Appends like [`EventStore::append`], but each event keeps the commit time it is given
    /// instead of taking the store's clock, and the batch must land at `first_revision`: for
    /// moving a store (`eventfold import`), an administrator's operation that a server offers to
    /// admin tokens only. Refused (nothing written) with
    /// [`StoreError::ImportTimestampTooEarly`] when a timestamp is earlier than the last event
    /// the store committed or than the one before it in the batch (a store's event timestamps
    /// never decrease), with [`StoreError::ImportRevisionMismatch`] when the stream's next
    /// revision is not `first_revision`; refused as invalid when a timestamp is later than the
    /// store's clock. A retry is a replay, as for `append`; a batch that shares ids with the
    /// window otherwise is written (an import carries history as it was, which may repeat ids
    /// appended under older rules), and its ids join the window. A store
    /// that only uses its own clock answers [`StoreError::Unsupported`] (the default).
    ///
    /// [`StoreError::ImportTimestampTooEarly`]: crate::StoreError::ImportTimestampTooEarly
    /// [`StoreError::ImportRevisionMismatch`]: crate::StoreError::ImportRevisionMismatch
    /// [`StoreError::Unsupported`]: crate::StoreError::Unsupported
    async fn append_imported(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        batch: ImportBatch,
    ) -> StoreResult<AppendResult> {
        let _ = (stream, expected, batch);
        Err(crate::StoreError::Unsupported {
            operation: "append events with the timestamps they had in another store".into(),
            hint: "import with the target's own timestamps instead (`eventfold import --server-timestamps`)".into(),
        })
    }

    /// Every stream the store knows, in byte order, with its head and metadata: deleted ones
    /// (soft, with nothing after, and hard) included, unlike [`EventStore::list_streams`]. What
    /// `eventfold export` needs to carry deletes and metadata; a server offers it to admin
    /// tokens only. A store that cannot list them answers [`StoreError::Unsupported`] (the
    /// default).
    ///
    /// [`StoreError::Unsupported`]: crate::StoreError::Unsupported
    async fn list_known_streams(&self, list: ListStreams) -> StoreResult<KnownStreams> {
        let _ = list;
        Err(crate::StoreError::Unsupported {
            operation: "list its streams with their deletes".into(),
            hint: "move the events only (`eventfold export --events-only`)".into(),
        })
    }

    /// Registers a JSON Schema for events of one type and schema version: from then on an
    /// append of such an event whose data does not match it is refused
    /// ([`StoreError::SchemaValidationFailed`], nothing of the batch written), on every server
    /// of the store. Events of a type and version without a schema are not checked, and reads
    /// never change. A registered schema never changes: registering the same document again
    /// is [`SchemaRegistered::Unchanged`], another one [`StoreError::SchemaConflict`]. A
    /// document that is not a valid JSON Schema is refused as invalid (`JSON Schema`). A
    /// store without a schema registry answers [`StoreError::Unsupported`] (the default);
    /// `eventfold_schema::Validating` is the registry around any store.
    ///
    /// [`StoreError::SchemaValidationFailed`]: crate::StoreError::SchemaValidationFailed
    /// [`StoreError::SchemaConflict`]: crate::StoreError::SchemaConflict
    /// [`StoreError::Unsupported`]: crate::StoreError::Unsupported
    /// [`SchemaRegistered::Unchanged`]: crate::SchemaRegistered::Unchanged
    async fn register_schema(
        &self,
        schema: crate::EventSchema,
    ) -> StoreResult<crate::SchemaRegistered> {
        let _ = schema;
        Err(no_schema_registry())
    }

    /// The JSON Schema registered for `key` ([`StoreError::SchemaNotFound`] when there is
    /// none); [`StoreError::Unsupported`] without a registry (the default).
    ///
    /// [`StoreError::SchemaNotFound`]: crate::StoreError::SchemaNotFound
    /// [`StoreError::Unsupported`]: crate::StoreError::Unsupported
    async fn schema(&self, key: &crate::SchemaKey) -> StoreResult<crate::EventSchema> {
        let _ = key;
        Err(no_schema_registry())
    }

    /// Every event type and schema version with a registered JSON Schema, in order of type,
    /// then version; [`StoreError::Unsupported`] without a registry (the default).
    ///
    /// [`StoreError::Unsupported`]: crate::StoreError::Unsupported
    async fn list_schemas(&self) -> StoreResult<Vec<crate::SchemaKey>> {
        Err(no_schema_registry())
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

/// The answer of the schema methods of a store without a registry.
fn no_schema_registry() -> crate::StoreError {
    crate::StoreError::Unsupported {
        operation: "keep JSON Schemas of event types".into(),
        hint: "wrap the store in `eventfold_schema::Validating` (what `eventfold serve` does)"
            .into(),
    }
}
