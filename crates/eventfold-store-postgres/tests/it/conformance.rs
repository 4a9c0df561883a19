//! The whole conformance suite, on a fresh database per case. When PostgreSQL is unreachable
//! each case runs on the in-memory store instead, after printing why.

use eventfold_core::{
    AllSlice, AppendCondition, AppendResult, DeleteMode, EventFilter, EventStore,
    EventSubscription, ExpectedRevision, ImportBatch, KnownStreams, ListStreams, NewEvent,
    Position, ReadAll, ReadStream, Revision, StoreResult, StreamInfo, StreamList, StreamMetadata,
    StreamName, StreamSlice, SubscribeFrom,
};
use eventfold_memory::MemoryStore;
use eventfold_store_postgres::{PostgresOptions, PostgresStore};

use crate::TestDb;

/// The store under test, or the in-memory stand-in when PostgreSQL is unreachable (the case
/// then proves nothing about PostgreSQL, and says so on stderr).
#[derive(Debug)]
pub(crate) enum Store {
    Postgres(PostgresStore),
    Skipped(MemoryStore),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Postgres($s) => $e,
            Store::Skipped($s) => $e,
        }
    };
}

#[async_trait::async_trait]
impl EventStore for Store {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        each!(self, s => s.append(stream, expected, events).await)
    }

    async fn append_with_condition(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> StoreResult<AppendResult> {
        each!(self, s => s.append_with_condition(stream, expected, events, condition).await)
    }
    async fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice> {
        each!(self, s => s.read_stream(stream, read).await)
    }
    async fn read_all(&self, read: ReadAll) -> StoreResult<AllSlice> {
        each!(self, s => s.read_all(read).await)
    }
    fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: SubscribeFrom<Revision>,
    ) -> EventSubscription {
        each!(self, s => s.subscribe_stream(stream, from))
    }
    fn subscribe_all(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
    ) -> EventSubscription {
        each!(self, s => s.subscribe_all(from, filter))
    }
    async fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo> {
        each!(self, s => s.stream_info(stream).await)
    }
    async fn list_streams(&self, list: ListStreams) -> StoreResult<StreamList> {
        each!(self, s => s.list_streams(list).await)
    }
    async fn append_imported(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        batch: ImportBatch,
    ) -> StoreResult<AppendResult> {
        each!(self, s => s.append_imported(stream, expected, batch).await)
    }

    async fn list_known_streams(&self, list: ListStreams) -> StoreResult<KnownStreams> {
        each!(self, s => s.list_known_streams(list).await)
    }

    async fn get_metadata(&self, stream: &StreamName) -> StoreResult<StreamMetadata> {
        each!(self, s => s.get_metadata(stream).await)
    }
    async fn set_metadata(&self, stream: &StreamName, metadata: StreamMetadata) -> StoreResult<()> {
        each!(self, s => s.set_metadata(stream, metadata).await)
    }
    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    ) -> StoreResult<()> {
        each!(self, s => s.delete_stream(stream, expected, mode).await)
    }
}

pub(crate) async fn store() -> (Store, Option<TestDb>) {
    match TestDb::create().await {
        Some(db) => {
            let options = PostgresOptions {
                pool_size: 8,
                ..PostgresOptions::default()
            };
            (Store::Postgres(db.store(options).await), Some(db))
        }
        None => (Store::Skipped(MemoryStore::new()), None),
    }
}

eventfold_conformance::conformance_tests!(store);

mod window {
    use eventfold_memory::MemoryStore;
    use eventfold_store_postgres::PostgresOptions;

    use super::Store;
    use crate::TestDb;

    eventfold_conformance::idempotency_window_tests!(|window| async move {
        match TestDb::create().await {
            Some(db) => {
                let options = PostgresOptions {
                    pool_size: 4,
                    idempotency: window,
                    ..PostgresOptions::default()
                };
                (Store::Postgres(db.store(options).await), Some(db))
            }
            None => (
                Store::Skipped(MemoryStore::with_window(
                    eventfold_core::Limits::DEFAULT,
                    window,
                )),
                None,
            ),
        }
    });
}
