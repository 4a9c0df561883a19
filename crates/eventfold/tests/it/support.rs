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

/// A real server (the `eventfold serve` router, engine and consumer groups) on a random port.
pub struct Server {
    /// Its base URL.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts one.
    pub async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_in(&dir.path().join("data"));
        let state_engine = engine_in(&dir.path().join("groups"));
        let groups = eventfold_groups::Groups::open(
            Arc::new(engine.clone()),
            Arc::new(state_engine.clone()),
        )
        .await
        .unwrap();
        let state = eventfold_server::AppState::new(
            Arc::new(engine.clone()),
            eventfold_server::ServerLimits::default(),
        )
        .with_groups(groups.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            eventfold_server::serve(listener, state, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
            groups.shutdown().await;
            engine.shutdown();
            state_engine.shutdown();
        });
        Server {
            url,
            stop: Some(tx),
            task,
            _dir: dir,
        }
    }

    /// Stops it and waits until the stores are shut down.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap();
    }
}
