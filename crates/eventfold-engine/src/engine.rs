use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use eventfold_core::{
    AllSlice, AppendCondition, AppendResult, DeleteMode, EventFilter, EventStore,
    EventSubscription, ExpectedRevision, ImportBatch, KnownStreams, ListStreams, NewEvent,
    PendingAppend, Position, ReadAll, ReadStream, Revision, StoreError, StoreResult, StreamInfo,
    StreamList, StreamMetadata, StreamName, StreamSlice, SubscribeFrom, ValidationError,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

use crate::format::{BODY_FIXED_BYTES, FRAME_HEADER_BYTES};
use crate::options::EngineOptions;
use crate::shared::Shared;
use crate::writer::{Condition, Op, Reply, Request, Writer};

/// The embedded engine. Cheap to clone; every clone is the same store. The store closes when
/// the last clone is dropped or [`Engine::shutdown`] is called.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    tx: RwLock<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held (and locked) for as long as the writer may write; released by `stop`.
    lock: Mutex<Option<File>>,
}

/// Figures about an open engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    /// Event records in the log (deleted or hidden ones included).
    pub events: u64,
    /// Streams known to the index (deleted ones included).
    pub streams: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes of records in the log.
    pub log_bytes: u64,
    /// Estimated heap bytes of the in-memory indexes.
    pub index_bytes: u64,
    /// Index runs a stream read may ask: key tables on disk and frozen memtables.
    pub index_runs: u64,
    /// The position the next record gets.
    pub next_position: u64,
    /// Whether background index work is waiting: a frozen memtable not yet written as a key
    /// table, or tables of one size class ready to be merged. Reads are correct either way;
    /// they ask more runs until it is done.
    pub index_busy: bool,
    /// Event ids held in the idempotency window (see [`EngineOptions::idempotency`]), as of
    /// the writer's last group.
    pub idempotency_ids: u64,
    /// Heap bytes the idempotency window holds (capacities), as of the writer's last group.
    pub idempotency_bytes: u64,
}

/// Largest bytes one event record adds beside its data, metadata and tags' bytes (frame, fixed
/// body, names, the tags section's count and lengths).
const RECORD_OVERHEAD_MAX: usize =
    FRAME_HEADER_BYTES + BODY_FIXED_BYTES + 3 * 256 + crate::format::TAGS_SECTION_OVERHEAD_MAX;

/// Times a conditional append checks the log and asks the writer again before it gives up
/// (each time, more events than the writer keeps were appended in between: see `condition`).
const CONDITION_ROUNDS_MAX: usize = 16;

impl Engine {
    /// Opens (creating if needed) the store in `dir`, recovering from a crash if there was one:
    /// a torn tail is cut off; a damaged record anywhere else is an error naming file and offset.
    /// Blocking: call it before starting work or from `spawn_blocking`.
    pub fn open(dir: impl AsRef<Path>, options: EngineOptions) -> StoreResult<Engine> {
        check_options(&options)?;
        let dir = dir.as_ref().to_path_buf();
        let recovered = crate::recovery::recover(&dir, &options)?;
        let (commit_tx, commit_rx) = watch::channel(recovered.index.next_position);
        let last_seen = crate::condition::LastSeen::new(recovered.index.next_position);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            index: RwLock::new(recovered.index),
            segments: recovered.segments,
            committed: commit_rx,
            poisoned: Mutex::new(None),
            limits: options.limits,
            segment_bytes: options.segment_bytes,
            io: options.io.clone(),
            sync: options.durability == crate::options::Durability::Fsync,
            gate: RwLock::new(()),
            maintenance: Mutex::new(()),
            scavenging: Mutex::new(()),
            epoch: std::sync::atomic::AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            seen_ids: std::sync::atomic::AtomicU64::new(0),
            seen_bytes: std::sync::atomic::AtomicU64::new(0),
            last_seen,
        });
        let (tx, rx) = mpsc::channel(options.append_queue_depth.max(1));
        let writer = Writer::new(shared.clone(), options, recovered.start, commit_tx, rx);
        let handle = std::thread::Builder::new()
            .name("eventfold-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::io("start the writer thread", e))?;
        Ok(Engine {
            inner: Arc::new(Inner {
                shared,
                tx: RwLock::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                lock: Mutex::new(Some(recovered.lock)),
            }),
        })
    }

    /// Finishes the appends already queued, stops the writer and releases the directory.
    /// Later calls on any clone answer `Closed`. Blocking.
    pub fn shutdown(&self) {
        self.inner.stop();
    }

    /// Scavenges the store: rewrites its sealed segments without the events no read can
    /// return any more (hard-deleted streams; below a soft delete or `truncate_before`; beyond
    /// `max_count`; older than `max_age`), so that their bytes leave the disk, while appends,
    /// reads and subscriptions go on. Positions and revisions of the other events do not
    /// change. `progress` is called after each sealed segment. `None` when another scavenge
    /// is running. Blocking (it reads every sealed segment that may hold such events).
    ///
    /// What it keeps: every system record (metadata, deletes, tombstones: a hard-deleted
    /// stream's name stays, so it is never reused) and each stream's last append unless the
    /// stream is hard-deleted (idempotent retries need it). Events in the active segment wait
    /// until it is sealed.
    pub fn scavenge(
        &self,
        mut progress: impl FnMut(&crate::ScavengeProgress),
    ) -> StoreResult<Option<crate::ScavengeReport>> {
        if let Some(cause) = self.poisoned() {
            return Err(StoreError::Poisoned { cause });
        }
        crate::scavenge::scavenge(&self.inner.shared, &mut progress)
    }

    /// Figures about the store.
    pub fn stats(&self) -> EngineStats {
        let index = self.inner.shared.index.read();
        let (_, off) = crate::format::split_addr(index.end_addr);
        EngineStats {
            events: index.events,
            streams: index.stream_count() as u64,
            segments: self.inner.shared.segments.count() as u64,
            log_bytes: (self.inner.shared.segments.count() as u64).saturating_sub(1)
                * self.inner.shared.segment_bytes
                + off,
            index_bytes: index.heap_bytes(),
            index_runs: index.run_count() as u64,
            next_position: index.next_position,
            index_busy: index.has_frozen()
                || index
                    .merge_candidates(crate::indexer::MERGE_FANOUT)
                    .is_some(),
            idempotency_ids: self
                .inner
                .shared
                .seen_ids
                .load(std::sync::atomic::Ordering::Relaxed),
            idempotency_bytes: self
                .inner
                .shared
                .seen_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The failure that stopped writes, if one did.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.shared.poisoned.lock().clone()
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Checks a batch and hands it to the writer as an append (with given timestamps and a
    /// landing revision when `import` says so).
    async fn submit_append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        import: Option<(u64, Vec<i64>)>,
    ) -> StoreResult<AppendResult> {
        appended(
            self.enqueue_append(stream, expected, events, import)
                .await?
                .await,
        )
    }

    /// A conditional append: the log before the writer's recent events is checked here (see
    /// `condition`), the rest by the writer in sequence with every append before it.
    async fn submit_conditional(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mut events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> StoreResult<AppendResult> {
        let bytes = self.check_batch(&events)?;
        let shared = &self.inner.shared;
        let mut first = condition.first_position();
        let query = condition.fail_if_events_match;
        for _ in 0..CONDITION_ROUNDS_MAX {
            if shared.last_seen.may_match(&query, first) && first < shared.last_seen.recent_from() {
                match shared.first_match(&query, first)? {
                    (Some(position), _) => {
                        return Err(StoreError::AppendConditionFailed {
                            stream: stream.clone(),
                            after: condition.after,
                            position,
                        });
                    }
                    (None, checked_to) => first = first.max(checked_to),
                }
            }
            let op = Op::Append {
                stream: stream.clone(),
                expected,
                events,
                import: None,
                condition: Some(Condition {
                    query: query.clone(),
                    first,
                    after: condition.after,
                }),
            };
            match self.submit(op, bytes).await? {
                Reply::Appended(r) => return Ok(r),
                Reply::CheckLogFirst(back) => events = back,
                Reply::Done => return Err(no_result()),
            }
        }
        Err(StoreError::Unavailable {
            detail: format!(
                "a conditional append was overtaken {CONDITION_ROUNDS_MAX} times by more appends than the writer keeps in memory for checking conditions; nothing was written"
            ),
            outcome_unknown: false,
        })
    }

    async fn submit(&self, op: Op, encoded_bytes: usize) -> StoreResult<Reply> {
        self.enqueue(op, encoded_bytes)
            .await?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Puts `op` in the writer's queue and returns where its reply will come. The queue is
    /// first in, first out (a full queue's waiting senders too, `tokio::sync::mpsc`), and the
    /// writer judges requests in queue order: a request enqueued after this returns is judged
    /// after `op`.
    async fn enqueue(
        &self,
        op: Op,
        encoded_bytes: usize,
    ) -> StoreResult<oneshot::Receiver<StoreResult<Reply>>> {
        let tx = self.inner.tx.read().clone().ok_or(StoreError::Closed)?;
        let (reply, rx) = oneshot::channel();
        tx.send(Request {
            op,
            encoded_bytes,
            reply,
        })
        .await
        .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Checks an unconditional append (or import) and puts it in the writer's queue; its
    /// reply comes on the receiver (see [`appended`]).
    async fn enqueue_append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        import: Option<(u64, Vec<i64>)>,
    ) -> StoreResult<oneshot::Receiver<StoreResult<Reply>>> {
        let bytes = self.check_batch(&events)?;
        let op = Op::Append {
            stream: stream.clone(),
            expected,
            events,
            import,
            condition: None,
        };
        self.enqueue(op, bytes).await
    }

    /// Checks the batch against the limits; the bytes its records take at most.
    fn check_batch(&self, events: &[NewEvent]) -> StoreResult<usize> {
        let total = self.inner.shared.limits.check_batch(events)?;
        Ok(total + events.len() * RECORD_OVERHEAD_MAX)
    }
}

/// The outcome of an unconditional append from the writer's reply (or its absence: the writer
/// stopped).
fn appended(
    reply: Result<StoreResult<Reply>, oneshot::error::RecvError>,
) -> StoreResult<AppendResult> {
    match reply.map_err(|_| StoreError::Closed)?? {
        Reply::Appended(r) => Ok(r),
        Reply::Done | Reply::CheckLogFirst(_) => Err(no_result()),
    }
}

fn no_result() -> StoreError {
    StoreError::Backend {
        code: "internal".into(),
        message: "the writer answered an append with no result".into(),
    }
}

impl Inner {
    fn stop(&self) {
        self.tx.write().take();
        // Hold the writer slot while joining, so that a concurrent `stop` releases the directory
        // only once the writer (and its housekeeper) wrote their last byte.
        let mut writer = self.writer.lock();
        if let Some(h) = writer.take() {
            let _ = h.join();
        }
        // A scavenge commits no segment after this (and one committing now finishes first).
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        drop(self.shared.maintenance.lock());
        self.lock.lock().take();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

fn check_options(o: &EngineOptions) -> StoreResult<()> {
    o.idempotency.check()?;
    let invalid = |why: String| {
        StoreError::Invalid(ValidationError::new("engine option", "segment_bytes", why))
    };
    let batch_max = o.limits.batch_bytes_max + o.limits.batch_events_max * RECORD_OVERHEAD_MAX;
    if o.segment_bytes > u64::from(u32::MAX) {
        return Err(invalid(format!(
            "{} is above the 4 GiB a segment can address",
            o.segment_bytes
        )));
    }
    if (o.segment_bytes as usize) < batch_max + crate::format::SEGMENT_HEADER_BYTES as usize {
        return Err(invalid(format!(
            "{} bytes cannot hold the largest allowed append ({batch_max} bytes); raise segment_bytes or lower the batch limits",
            o.segment_bytes
        )));
    }
    if (o.group_commit_bytes_max.max(batch_max) as u64) > crate::format::UNSYNCED_BYTES_MAX {
        return Err(invalid(format!(
            "a group commit or batch of up to {} bytes exceeds the format's {} unsynced bytes; lower the limits",
            o.group_commit_bytes_max.max(batch_max),
            crate::format::UNSYNCED_BYTES_MAX
        )));
    }
    Ok(())
}

#[async_trait::async_trait]
impl EventStore for Engine {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        self.submit_append(stream, expected, events, None).await
    }

    async fn append_imported(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        batch: ImportBatch,
    ) -> StoreResult<AppendResult> {
        let (events, timestamps): (Vec<NewEvent>, Vec<i64>) = batch
            .events
            .into_iter()
            .map(|(e, t)| (e, t.micros()))
            .unzip();
        self.submit_append(
            stream,
            expected,
            events,
            Some((batch.first_revision.0, timestamps)),
        )
        .await
    }

    async fn append_with_condition(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> StoreResult<AppendResult> {
        self.submit_conditional(stream, expected, events, condition)
            .await
    }

    /// An unconditional append is in the writer's queue when this resolves. A conditional one
    /// runs whole first: it may go back to check the log and queue again, behind appends sent
    /// after it.
    async fn append_sequenced(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> PendingAppend {
        let r = match condition {
            None => match self.enqueue_append(stream, expected, events, None).await {
                Ok(rx) => return Box::pin(async move { appended(rx.await) }),
                Err(e) => Err(e),
            },
            Some(c) => self.submit_conditional(stream, expected, events, c).await,
        };
        Box::pin(std::future::ready(r))
    }

    async fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice> {
        self.inner.shared.read_stream(stream, read)
    }

    async fn read_all(&self, read: ReadAll) -> StoreResult<AllSlice> {
        self.inner.shared.read_all(&read)
    }

    fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: SubscribeFrom<Revision>,
    ) -> EventSubscription {
        crate::subscribe::stream(self.inner.shared.clone(), stream.clone(), from)
    }

    fn subscribe_all(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
    ) -> EventSubscription {
        crate::subscribe::all(self.inner.shared.clone(), from, filter)
    }

    async fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo> {
        self.inner.shared.stream_info(stream)
    }

    async fn list_streams(&self, list: ListStreams) -> StoreResult<StreamList> {
        self.inner.shared.list_streams(&list)
    }

    async fn get_metadata(&self, stream: &StreamName) -> StoreResult<StreamMetadata> {
        self.inner.shared.get_metadata(stream)
    }

    async fn list_known_streams(&self, list: ListStreams) -> StoreResult<KnownStreams> {
        self.inner.shared.list_known_streams(&list)
    }

    async fn set_metadata(&self, stream: &StreamName, metadata: StreamMetadata) -> StoreResult<()> {
        let bytes =
            serde_json::to_vec(&metadata).map(|v| v.len()).unwrap_or(0) + RECORD_OVERHEAD_MAX;
        // The engine counts the record's overhead too: the metadata record must fit where an
        // event record of the same size would.
        self.inner.shared.limits.check_event_bytes(bytes)?;
        self.submit(
            Op::SetMetadata {
                stream: stream.clone(),
                metadata,
            },
            bytes,
        )
        .await
        .map(|_| ())
    }

    async fn health(&self) -> StoreResult<()> {
        if self.inner.tx.read().is_none() {
            return Err(StoreError::Closed);
        }
        match self.poisoned() {
            Some(cause) => Err(StoreError::Poisoned { cause }),
            None => Ok(()),
        }
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    ) -> StoreResult<()> {
        self.submit(
            Op::Delete {
                stream: stream.clone(),
                expected,
                mode,
            },
            RECORD_OVERHEAD_MAX,
        )
        .await
        .map(|_| ())
    }
}
