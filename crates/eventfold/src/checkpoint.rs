use std::collections::HashMap;
use std::sync::Arc;

use eventfold_core::{
    EventStore, EventType, ExpectedRevision, NewEvent, Position, ReadStream, StoreError,
    StreamMetadata, StreamName,
};
use parking_lot::Mutex;

/// Where a named consumer (projection, handler, relay) has got to in `$all`: the position of
/// the last event it finished. A restart continues after it.
#[async_trait::async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The last finished position of `name`, `None` when it never finished one.
    async fn load(&self, name: &str) -> Result<Option<Position>, StoreError>;

    /// Records that `name` finished everything up to and including `position`.
    async fn save(&self, name: &str, position: Position) -> Result<(), StoreError>;

    /// Forgets `name`'s checkpoint (a rebuild starts from the beginning).
    async fn reset(&self, name: &str) -> Result<(), StoreError>;
}

/// Checkpoints in memory: for tests and for consumers whose state is in memory too.
#[derive(Clone, Debug, Default)]
pub struct InMemoryCheckpoints {
    positions: Arc<Mutex<HashMap<String, Position>>>,
}

impl InMemoryCheckpoints {
    /// No checkpoints.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl CheckpointStore for InMemoryCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<Position>, StoreError> {
        Ok(self.positions.lock().get(name).copied())
    }

    async fn save(&self, name: &str, position: Position) -> Result<(), StoreError> {
        self.positions.lock().insert(name.to_owned(), position);
        Ok(())
    }

    async fn reset(&self, name: &str) -> Result<(), StoreError> {
        self.positions.lock().remove(name);
        Ok(())
    }
}

/// Checkpoints kept in an event store, one stream per consumer
/// (`checkpoint-{name}`, max-count 1 so it never grows): durable wherever the store is, with
/// no other database. Not transactional with a read model kept elsewhere: for that, keep the
/// checkpoint in the read model's own database (`eventfold-sqlite`, `eventfold-postgres`).
#[derive(Clone)]
pub struct StoreCheckpoints {
    store: Arc<dyn EventStore>,
}

impl std::fmt::Debug for StoreCheckpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCheckpoints")
    }
}

/// Event type of a checkpoint record.
const CHECKPOINT_EVENT_TYPE: &str = "checkpoint";

impl StoreCheckpoints {
    /// Checkpoints in `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        StoreCheckpoints { store }
    }

    fn stream(name: &str) -> Result<StreamName, StoreError> {
        StreamName::new(format!("checkpoint-{name}")).map_err(StoreError::from)
    }
}

#[async_trait::async_trait]
impl CheckpointStore for StoreCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<Position>, StoreError> {
        let stream = Self::stream(name)?;
        match self
            .store
            .read_stream(&stream, ReadStream::backward(1))
            .await
        {
            Ok(slice) => Ok(slice
                .events
                .first()
                .and_then(|e| e.data_json())
                .and_then(|v| v.get("position").and_then(|p| p.as_u64()))
                .map(Position)),
            Err(StoreError::StreamNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn save(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let stream = Self::stream(name)?;
        let event = NewEvent::json(
            EventType::new(CHECKPOINT_EVENT_TYPE).expect("a valid constant event type"),
            &serde_json::json!({ "position": position.0 }),
        );
        let result = self
            .store
            .append(&stream, ExpectedRevision::Any, vec![event])
            .await?;
        if result.first_revision.0 == 0 {
            let metadata = StreamMetadata {
                max_count: Some(1),
                ..StreamMetadata::default()
            };
            self.store.set_metadata(&stream, metadata).await?;
        }
        Ok(())
    }

    async fn reset(&self, name: &str) -> Result<(), StoreError> {
        let stream = Self::stream(name)?;
        match self
            .store
            .delete_stream(
                &stream,
                ExpectedRevision::Any,
                eventfold_core::DeleteMode::Soft,
            )
            .await
        {
            Ok(()) | Err(StoreError::StreamNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
