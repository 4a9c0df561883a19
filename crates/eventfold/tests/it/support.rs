//! Setup shared by the test modules.

use std::path::Path;
use std::sync::Arc;

use eventfold::core::{EventStore, StreamName};
use eventfold_engine::{Engine, EngineOptions};

/// Opens (or reopens) the embedded engine in `dir`, with the test options.
pub fn engine_in(dir: &Path) -> Engine {
    Engine::open(dir, EngineOptions::for_tests()).unwrap()
}

/// The embedded engine in `dir`, as a store.
pub fn store_in(dir: &Path) -> Arc<dyn EventStore> {
    Arc::new(engine_in(dir))
}

/// A store in a fresh temporary directory; keep the directory as long as the store.
pub fn temp_store() -> (tempfile::TempDir, Arc<dyn EventStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    (dir, store)
}

/// A stream name known to be valid.
pub fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}
