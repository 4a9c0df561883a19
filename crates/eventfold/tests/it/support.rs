//! Setup shared by the test modules.

use std::path::Path;
use std::sync::Arc;

use eventfold::core::{
    AllSlice, AppendCondition, AppendResult, DeleteMode, EventFilter, EventStore,
    EventSubscription, ExpectedRevision, ListStreams, NewEvent, Position, ReadAll, ReadStream,
    Revision, StoreError, StoreResult, StreamInfo, StreamList, StreamMetadata, StreamName,
    StreamSlice, SubscribeFrom,
};
use eventfold_engine::{Engine, EngineOptions};
use futures::StreamExt;

/// Opens (or reopens) the embedded engine in `dir`, with the test options.
pub fn engine_in(dir: &Path) -> Engine {
    Engine::open(dir, EngineOptions::for_tests()).unwrap()
}

/// The embedded engine in `dir`, as a store.
pub fn store_in(dir: &Path) -> Arc<dyn EventStore> {
    Arc::new(engine_in(dir))
}

/// A fresh in-memory store: for tests that need a store, not the engine. It runs on the
/// caller's runtime (no thread of its own), so it works on paused tokio time too.
pub fn memory_store() -> Arc<dyn EventStore> {
    Arc::new(eventfold_memory::MemoryStore::new())
}

/// The embedded engine in a fresh temporary directory; keep the directory as long as the store.
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

/// A store (the embedded engine, say) that fails on demand, to test how consumers take store
/// errors: each queued fault is used once, by the next call of its kind; everything else is
/// passed through to the inner store.
pub struct Flaky {
    inner: Arc<dyn EventStore>,
    /// For the next `$all` subscriptions: after how many events it yields the error (then ends).
    subscriptions: parking_lot::Mutex<std::collections::VecDeque<(usize, StoreError)>>,
    /// For the next `read_all` calls: the error instead of the page.
    reads: parking_lot::Mutex<std::collections::VecDeque<StoreError>>,
}

impl Flaky {
    /// `inner` with no fault queued.
    pub fn new(inner: Arc<dyn EventStore>) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner,
            subscriptions: parking_lot::Mutex::default(),
            reads: parking_lot::Mutex::default(),
        })
    }

    /// The next `subscribe_all` yields `after` events, then `error`, and ends.
    pub fn break_subscription(&self, after: usize, error: StoreError) {
        self.subscriptions.lock().push_back((after, error));
    }

    /// The next `read_all` fails with `error`.
    pub fn fail_read_all(&self, error: StoreError) {
        self.reads.lock().push_back(error);
    }

    /// Queued faults not used yet.
    pub fn faults_left(&self) -> usize {
        self.subscriptions.lock().len() + self.reads.lock().len()
    }
}

/// A transient error as a remote store reports it (a network or server error).
pub fn network_error() -> StoreError {
    StoreError::Backend {
        code: "unavailable".into(),
        message: "the server did not answer (connection reset); retry later".into(),
    }
}

/// A transient I/O error.
pub fn io_error() -> StoreError {
    StoreError::io("reading a segment", std::io::Error::other("disk busy"))
}

#[async_trait::async_trait]
impl EventStore for Flaky {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        self.inner.append(stream, expected, events).await
    }

    async fn append_with_condition(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> StoreResult<AppendResult> {
        self.inner
            .append_with_condition(stream, expected, events, condition)
            .await
    }

    async fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice> {
        self.inner.read_stream(stream, read).await
    }

    async fn read_all(&self, read: ReadAll) -> StoreResult<AllSlice> {
        let fault = self.reads.lock().pop_front();
        match fault {
            Some(error) => Err(error),
            None => self.inner.read_all(read).await,
        }
    }

    fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: SubscribeFrom<Revision>,
    ) -> EventSubscription {
        self.inner.subscribe_stream(stream, from)
    }

    fn subscribe_all(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
    ) -> EventSubscription {
        let events = self.inner.subscribe_all(from, filter);
        let fault = self.subscriptions.lock().pop_front();
        match fault {
            None => events,
            Some((after, error)) => events
                .take(after)
                .chain(futures::stream::once(async move { Err(error) }))
                .boxed(),
        }
    }

    async fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo> {
        self.inner.stream_info(stream).await
    }

    async fn list_streams(&self, list: ListStreams) -> StoreResult<StreamList> {
        self.inner.list_streams(list).await
    }

    async fn get_metadata(&self, stream: &StreamName) -> StoreResult<StreamMetadata> {
        self.inner.get_metadata(stream).await
    }

    async fn set_metadata(&self, stream: &StreamName, metadata: StreamMetadata) -> StoreResult<()> {
        self.inner.set_metadata(stream, metadata).await
    }

    async fn health(&self) -> StoreResult<()> {
        self.inner.health().await
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    ) -> StoreResult<()> {
        self.inner.delete_stream(stream, expected, mode).await
    }
}

/// The OpenMetrics text of `registry`.
pub fn scrape(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encodable metrics");
    text
}

/// The value of the sample `series` (name and labels, exactly as exposed) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

/// Polls `registry` (for up to 10 s) until the sample `series` is `value`; the last text.
pub async fn wait_for_sample(
    registry: &prometheus_client::registry::Registry,
    series: &str,
    value: f64,
) -> String {
    for _ in 0..1000 {
        let text = scrape(registry);
        if sample(&text, series) == Some(value) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let text = scrape(registry);
    panic!("{series} never became {value}:\n{text}");
}
