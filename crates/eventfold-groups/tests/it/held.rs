//! A store wrapper for paused-time tests.
//!
//! The engine answers appends from its writer thread. While a task awaits that answer the
//! runtime looks idle, and paused tokio time then jumps to the next timer, which would fire ack
//! timeouts in the middle of an ack. Running writes on the blocking pool stops that: tokio does
//! not auto-advance paused time while a blocking task runs.

use std::sync::Arc;

use eventfold_core::{
    AllSlice, AppendResult, DeleteMode, EventFilter, EventStore, EventSubscription,
    ExpectedRevision, ListStreams, NewEvent, Position, ReadAll, ReadStream, Revision, StoreResult,
    StreamInfo, StreamList, StreamMetadata, StreamName, StreamSlice, SubscribeFrom,
};

/// Delegates to `E`, with writes on the blocking pool.
pub struct Held<E>(pub Arc<E>);

async fn blocking<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    tokio::task::spawn_blocking(move || futures::executor::block_on(f))
        .await
        .expect("the blocking write does not panic")
}

#[async_trait::async_trait]
impl<E: EventStore> EventStore for Held<E> {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        let (inner, stream) = (self.0.clone(), stream.clone());
        blocking(async move { inner.append(&stream, expected, events).await }).await
    }

    async fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice> {
        self.0.read_stream(stream, read).await
    }

    async fn read_all(&self, read: ReadAll) -> StoreResult<AllSlice> {
        self.0.read_all(read).await
    }

    fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: SubscribeFrom<Revision>,
    ) -> EventSubscription {
        self.0.subscribe_stream(stream, from)
    }

    fn subscribe_all(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
    ) -> EventSubscription {
        self.0.subscribe_all(from, filter)
    }

    async fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo> {
        self.0.stream_info(stream).await
    }

    async fn list_streams(&self, list: ListStreams) -> StoreResult<StreamList> {
        self.0.list_streams(list).await
    }

    async fn get_metadata(&self, stream: &StreamName) -> StoreResult<StreamMetadata> {
        self.0.get_metadata(stream).await
    }

    async fn set_metadata(&self, stream: &StreamName, metadata: StreamMetadata) -> StoreResult<()> {
        let (inner, stream) = (self.0.clone(), stream.clone());
        blocking(async move { inner.set_metadata(&stream, metadata).await }).await
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    ) -> StoreResult<()> {
        let (inner, stream) = (self.0.clone(), stream.clone());
        blocking(async move { inner.delete_stream(&stream, expected, mode).await }).await
    }
}
