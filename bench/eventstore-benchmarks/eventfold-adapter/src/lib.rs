//! eventfold adapter for pyeventsourcing/eventstore-benchmarks, written like the harness's UmaDB
//! adapter: a store manager that starts the server and owns one shared client, and lightweight
//! adapters that clone it.
//!
//! The server is a real `eventfold serve` child process (embedded engine, `--durability fsync`:
//! every append is acknowledged after fdatasync), started from the binary named by
//! `EVENTFOLD_BIN` (default `eventfold` on the PATH) with a fresh data directory, on a free port
//! of 127.0.0.1. The client is eventfold's Rust client (crates/eventfold-client: HTTP/1.1 with
//! keep-alive and a connection pool, JSON bodies, binary payloads base64-encoded).
//!
//! Mapping of the harness's model (UmaDB-style events with tags) onto streams:
//! - an event's single tag is its stream name (the harness gives every event exactly one tag,
//!   the stream it reads back by); an append whose events name different streams, or an event
//!   with no tag or several, is refused with an error rather than split into non-atomic appends;
//! - appends use `ExpectedRevision::Any` (the UmaDB adapter appends without a condition);
//! - a read returns the stream from its start (or from revision `from_offset`, a per-stream
//!   revision where UmaDB's is a global position; no workload sets it), at most `limit` events;
//!   a stream that does not exist reads as empty, as an unknown tag does in UmaDB;
//! - `ReadEvent::offset` is the event's global position, as in the UmaDB adapter.
use anyhow::{bail, Result};
use async_trait::async_trait;
use bench_core::adapter::{
    EventData, EventStoreAdapter, ReadEvent, ReadRequest, StoreDataDir, StoreManager,
    StoreManagerFactory,
};
use bench_core::local_server::{free_port, temp_data_dir, LocalServer};
use bench_core::wait_for_ready;
use eventfold_client::Client;
use eventfold_core::{
    ContentType, Direction, EventStore, EventType, ExpectedRevision, ListStreams, NewEvent,
    ReadFrom, ReadStream, Revision, StoreError, StreamName,
};
use std::sync::Arc;
use tokio::time::Duration;

/// Events per read request when a read asks for more (the server's default `read_limit_max`).
const READ_PAGE_EVENTS_MAX: u64 = 10_000;

// Store manager - handles lifecycle and adapter creation
pub struct EventfoldStoreManager {
    bin: String,
    process: Option<LocalServer>,
    client: Option<Client>,
    data_dir: StoreDataDir,
}

impl EventfoldStoreManager {
    pub fn new(data_dir: Option<String>) -> Self {
        Self {
            bin: std::env::var("EVENTFOLD_BIN")
                .ok()
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| "eventfold".to_string()),
            process: None,
            client: None,
            data_dir: StoreDataDir::new(data_dir, "eventfold"),
        }
    }
}

#[async_trait]
impl StoreManager for EventfoldStoreManager {
    async fn start(&mut self) -> Result<()> {
        let (dir, owned) = match self.data_dir.setup()? {
            Some(p) => (std::path::PathBuf::from(p), None),
            None => {
                let d = temp_data_dir("eventfold")?;
                (d.clone(), Some(d))
            }
        };
        let port = free_port()?;
        let args = vec![
            "serve".to_string(),
            "--listen".to_string(),
            format!("127.0.0.1:{}", port),
            "--data".to_string(),
            dir.to_string_lossy().to_string(),
            "--durability".to_string(),
            "fsync".to_string(),
        ];
        let log = dir.with_extension("log");
        let mut process = LocalServer::spawn("eventfold", &self.bin, &args, &log, owned)?;
        let uri = format!("http://127.0.0.1:{}", port);

        // Wait for the server to answer and create the shared client
        let client = Client::new(&uri, None)?;
        let ready = wait_for_ready(
            "eventfold",
            || {
                let client = client.clone();
                async move {
                    client
                        .list_streams(ListStreams {
                            prefix: None,
                            after: None,
                            limit: 1,
                        })
                        .await?;
                    Ok(())
                }
            },
            Duration::from_secs(60),
        )
        .await;
        if let Err(e) = ready {
            process.check_running()?;
            process.stop().await.ok();
            return Err(e);
        }
        self.process = Some(process);
        self.client = Some(client);
        Ok(())
    }

    async fn pull(&mut self) -> Result<()> {
        // Nothing to pull: the server is a local binary.
        Ok(())
    }

    async fn stop(&mut self) -> Result<()> {
        self.client = None;
        if let Some(mut process) = self.process.take() {
            process.stop().await?;
        }
        self.data_dir.cleanup()?;
        Ok(())
    }

    fn container_id(&self) -> Option<String> {
        None
    }

    fn name(&self) -> &'static str {
        "eventfold"
    }

    fn create_adapter(&self) -> Result<Arc<dyn EventStoreAdapter>> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| {
                anyhow::anyhow!("eventfold client not initialized. Did you call start()?")
            })?
            .clone();
        Ok(Arc::new(EventfoldAdapter { client }))
    }
}

// Lightweight adapter - just wraps a shared client (clones share one connection pool)
pub struct EventfoldAdapter {
    client: Client,
}

fn stream_of(evt: &EventData) -> Result<&str> {
    match evt.tags.as_slice() {
        [stream] => Ok(stream),
        tags => bail!(
            "eventfold adapter: an event needs exactly one tag (its stream name), got {}",
            tags.len()
        ),
    }
}

#[async_trait]
impl EventStoreAdapter for EventfoldAdapter {
    async fn append(&self, events: Vec<EventData>) -> Result<()> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let stream = StreamName::new(stream_of(first)?)?;
        let content_type = ContentType::new("application/octet-stream")?;
        let mut batch = Vec::with_capacity(events.len());
        for evt in events {
            if stream_of(&evt)? != stream.as_str() {
                bail!("eventfold adapter: one append writes one stream; the events name several");
            }
            batch.push(NewEvent::bytes(
                EventType::new(&evt.event_type)?,
                content_type.clone(),
                evt.payload,
            ));
        }
        self.client
            .append(&stream, ExpectedRevision::Any, batch)
            .await?;
        Ok(())
    }

    async fn read(&self, req: ReadRequest) -> Result<Vec<ReadEvent>> {
        let stream = StreamName::new(&req.stream)?;
        let mut from = match req.from_offset {
            Some(revision) => ReadFrom::At(Revision(revision)),
            None => ReadFrom::Start,
        };
        let mut out = Vec::new();
        loop {
            let want = match req.limit {
                Some(limit) => limit
                    .saturating_sub(out.len() as u64)
                    .min(READ_PAGE_EVENTS_MAX),
                None => READ_PAGE_EVENTS_MAX,
            };
            if want == 0 {
                break;
            }
            let read = ReadStream {
                from,
                direction: Direction::Forward,
                limit: want as usize,
                until: None,
            };
            let slice = match self.client.read_stream(&stream, read).await {
                Ok(slice) => slice,
                Err(StoreError::StreamNotFound { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            out.extend(slice.events.into_iter().map(|e| ReadEvent {
                offset: e.position.0,
                event_type: e.event_type.as_str().to_string(),
                payload: e.data,
                timestamp_ms: u64::try_from(e.timestamp.micros() / 1000).unwrap_or(0),
            }));
            match slice.next {
                Some(next) => from = ReadFrom::At(next),
                None => break,
            }
        }
        Ok(out)
    }
}

pub struct EventfoldFactory;

impl StoreManagerFactory for EventfoldFactory {
    fn name(&self) -> &'static str {
        "eventfold"
    }

    fn create_store_manager(&self, data_dir: Option<String>) -> Result<Box<dyn StoreManager>> {
        Ok(Box::new(EventfoldStoreManager::new(data_dir)))
    }
}
