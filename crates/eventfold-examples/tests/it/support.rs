//! Setup shared by the test modules.

use std::path::Path;
use std::sync::Arc;

use eventfold::core::{EventStore, ReadStream, RecordedEvent, StreamName};
use eventfold_engine::{Engine, EngineOptions};

/// Opens (or reopens) the embedded engine in `dir`, with the test options.
pub fn engine_in(dir: &Path) -> Engine {
    Engine::open(dir, EngineOptions::for_tests()).unwrap()
}

/// A store in a fresh temporary directory; keep the directory as long as the store.
pub fn temp_store() -> (tempfile::TempDir, Arc<dyn EventStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(engine_in(dir.path()));
    (dir, store)
}

/// The events of `stream` that `read` selects.
pub async fn read(store: &dyn EventStore, stream: &str, read: ReadStream) -> Vec<RecordedEvent> {
    store
        .read_stream(&StreamName::new(stream).unwrap(), read)
        .await
        .unwrap()
        .events
}
