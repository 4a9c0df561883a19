use std::sync::Arc;
use std::time::{Duration, Instant};

use eventfold_core::{
    EventFilter, EventStore, Position, ReadAll, ReadFrom, RecordedEvent, StoreError,
};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ProjectionError, ReadModel};
use crate::BoxError;
use crate::metrics::{FrameworkMetrics, LAG_REFRESH_INTERVAL, lag_events};
use crate::retry::{RetryPolicy, StoreRetries};
use crate::subscription::batches;
use crate::upcast::Upcasters;

/// Events per batch unless [`ProjectionProcessor::batch_size`] says otherwise: large enough
/// that a rebuild into a database commits rarely, small enough to keep a batch's memory modest.
pub const BATCH_SIZE_DEFAULT: usize = 1000;

/// Batches of `$all` as [`batches`] yields them.
type Batches = futures::stream::BoxStream<'static, Result<Vec<RecordedEvent>, StoreError>>;

/// Pages of a backward read tried when looking for the newest matching event.
const HEAD_PAGES_MAX: usize = 64;

/// Drives a [`ReadModel`]: reads `$all` from its checkpoint (history, then live), decodes each
/// batch through the [`Upcasters`] and applies it with its checkpoint in one atomic step.
///
/// Error policy: the processor never skips an event, and a failed batch is never applied in
/// part (the read model rolls it back with its checkpoint).
///
/// - A transient event store error ([`StoreError::Storage`], [`StoreError::Backend`],
///   [`StoreError::Unavailable`]: an I/O error, a remote server's network or server error, a
///   database that cannot be reached for now) makes a started processor start over
///   from its checkpoint after the delays of [`ProjectionProcessor::store_retry`] (forever by
///   default), logging a warning each time; meanwhile its phase is [`Phase::Retrying`]. This is
///   the framework's one rule for long-running consumers (see [`crate::retry`]).
/// - Any other store error, a transient one the policy gave up on, an event that passed the
///   filter but cannot be decoded, or a failure of the projection's own code stops it: the
///   error is in [`ProcessorHandle::status`] and returned by [`ProcessorHandle::join`], and
///   starting again retries the same batch.
///
/// [`ProjectionProcessor::catch_up`] and [`ProjectionProcessor::rebuild`] run once and return
/// any error to the caller. Events the filter leaves out (types the projection does not read)
/// are never decoded.
pub struct ProjectionProcessor<R: ReadModel> {
    store: Arc<dyn EventStore>,
    read_model: Arc<R>,
    upcasters: Upcasters,
    batch_size: usize,
    store_retry: RetryPolicy,
    metrics: Option<FrameworkMetrics>,
}

impl<R: ReadModel> std::fmt::Debug for ProjectionProcessor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionProcessor")
            .field("projection", &self.read_model.name())
            .field("batch_size", &self.batch_size)
            .field("upcasters", &self.upcasters)
            .field("store_retry", &self.store_retry)
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

impl<R: ReadModel> Clone for ProjectionProcessor<R> {
    fn clone(&self) -> Self {
        ProjectionProcessor {
            store: self.store.clone(),
            read_model: self.read_model.clone(),
            upcasters: self.upcasters.clone(),
            batch_size: self.batch_size,
            store_retry: self.store_retry.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// What the processor is doing.
#[derive(Clone, Debug)]
pub enum Phase {
    /// Loading the checkpoint.
    Starting,
    /// Applying history up to `head`, the newest matching event when it started.
    CatchingUp {
        /// The newest matching event when the processor started.
        head: Position,
    },
    /// Caught up: applying events as they are appended.
    Live,
    /// A transient event store error ended the last run: waiting out the
    /// [`ProjectionProcessor::store_retry`] delay before starting over from the checkpoint.
    Retrying {
        /// The error (a [`ProjectionError::Store`]).
        error: ProjectionError,
        /// Consecutive failed runs so far (1 after the first failure, and again after a run
        /// that applied something).
        attempt: u32,
    },
    /// Stopped on request.
    Stopped,
    /// Stopped by an error (see [`ProjectionProcessor`] for the policy).
    Failed(ProjectionError),
}

/// Where a running processor has got to.
#[derive(Clone, Debug)]
pub struct ProcessorStatus {
    /// The position of the last event applied (the checkpoint), `None` before any.
    pub position: Option<Position>,
    /// Events applied since this run started.
    pub events_applied: u64,
    /// What it is doing.
    pub phase: Phase,
}

/// How far a processor is behind the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lag {
    /// The last event applied.
    pub position: Option<Position>,
    /// The newest event in the store that the projection reads.
    pub head: Option<Position>,
    /// `head - position`, counted in `$all` positions: exact when the projection reads every
    /// event in between, an upper bound otherwise. 0 when caught up.
    pub lag_events: u64,
}

/// Progress of a rebuild or catch-up, reported after each batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildProgress {
    /// Events applied so far.
    pub events_done: u64,
    /// The last event applied.
    pub position: Position,
    /// The newest matching event when the rebuild started: it ends once it is applied.
    pub head: Position,
}

/// What a rebuild or catch-up did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildReport {
    /// Events applied.
    pub events: u64,
    /// The checkpoint at the end.
    pub position: Option<Position>,
    /// How long it took.
    pub elapsed: Duration,
}

impl RebuildReport {
    /// Events applied per second.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl<R: ReadModel> ProjectionProcessor<R> {
    /// A processor of `read_model` over the events of `store`.
    pub fn new(store: Arc<dyn EventStore>, read_model: R) -> Self {
        ProjectionProcessor {
            store,
            read_model: Arc::new(read_model),
            upcasters: Upcasters::new(),
            batch_size: BATCH_SIZE_DEFAULT,
            store_retry: RetryPolicy::forever(),
            metrics: None,
        }
    }

    /// Counts into `metrics` (under the projection's name) the events applied and failed by
    /// type and each batch's time, and keeps the projection's lag
    /// (`eventfold_projection_lag`): measured after each batch and, while started, every
    /// [`LAG_REFRESH_INTERVAL`] (one backward read of `$all` each time).
    pub fn metrics(mut self, metrics: FrameworkMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Delays before a started processor starts over from its checkpoint after a transient
    /// event store error; once its attempts are used up the processor stops with
    /// [`ProjectionError::Store`]. Default: [`RetryPolicy::forever`].
    pub fn store_retry(mut self, policy: RetryPolicy) -> Self {
        self.store_retry = policy;
        self
    }

    /// Decodes through `upcasters`.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// At most `events` events per batch (one transaction each); at least 1. Catch-up fills
    /// batches; a live processor takes what is ready, so live events are not held back.
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.max(1);
        self
    }

    /// The read model.
    pub fn read_model(&self) -> &R {
        &self.read_model
    }

    /// The newest event in the store that passes the projection's filter.
    pub async fn head(&self) -> Result<Option<Position>, ProjectionError> {
        head(&*self.store, &self.read_model.filter())
            .await
            .map_err(|source| self.store_error(source))
    }

    /// Applies everything from the checkpoint up to the newest matching event as of now, then
    /// returns (no live phase). `progress` is called after each batch.
    pub async fn catch_up(
        &self,
        mut progress: impl FnMut(&RebuildProgress) + Send,
    ) -> Result<RebuildReport, ProjectionError> {
        let started = Instant::now();
        let after = self.load_checkpoint().await?;
        let Some(head) = self.head().await? else {
            return Ok(RebuildReport {
                events: 0,
                position: after,
                elapsed: started.elapsed(),
            });
        };
        let mut position = after;
        let mut events_done = 0u64;
        if after.is_none_or(|a| a < head) {
            let mut stream = self.batches(after);
            loop {
                let batch = self.next_batch(&mut stream).await?;
                let (last, n) = self.apply_batch(batch).await?;
                events_done += n as u64;
                position = Some(last);
                progress(&RebuildProgress {
                    events_done,
                    position: last,
                    head,
                });
                if last >= head {
                    break;
                }
            }
        }
        Ok(RebuildReport {
            events: events_done,
            position,
            elapsed: started.elapsed(),
        })
    }

    /// Rebuilds the read model: resets it (the projection's reset hook and the checkpoint,
    /// together) and replays every matching event up to the newest one as of now, calling
    /// `progress` after each batch. Do not run it while a processor of the same read model is
    /// running; [`ProjectionProcessor::start`] it afterwards to continue live.
    pub async fn rebuild(
        &self,
        progress: impl FnMut(&RebuildProgress) + Send,
    ) -> Result<RebuildReport, ProjectionError> {
        self.read_model
            .reset()
            .await
            .map_err(|e| self.checkpoint_error("resetting the read model", e))?;
        self.catch_up(progress).await
    }

    /// Starts the processor as a tokio task: from the checkpoint, history then live, until
    /// stopped ([`ProcessorHandle::stop`], or dropping the handle) or failed; a transient store
    /// error is retried per [`ProjectionProcessor::store_retry`]. One processor per read model
    /// at a time.
    pub fn start(&self) -> ProcessorHandle {
        let (status_tx, status_rx) = watch::channel(ProcessorStatus {
            position: None,
            events_applied: 0,
            phase: Phase::Starting,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        if let Some(metrics) = &self.metrics {
            tokio::spawn(refresh_lag(
                metrics.clone(),
                self.read_model.name().to_owned(),
                self.store.clone(),
                self.read_model.filter(),
                status_rx.clone(),
            ));
        }
        let this = self.clone();
        let task = tokio::spawn(async move {
            let result = this.run(&status_tx, stop_rx).await;
            status_tx.send_modify(|s| {
                s.phase = match &result {
                    Ok(()) => Phase::Stopped,
                    Err(e) => Phase::Failed(e.clone()),
                }
            });
            if let Err(e) = &result {
                tracing::error!(error = %e, "projection processor stopped");
            }
            result
        });
        ProcessorHandle {
            name: self.read_model.name().to_owned(),
            filter: self.read_model.filter(),
            store: self.store.clone(),
            status: status_rx,
            stop: stop_tx,
            task,
        }
    }

    /// Runs from the checkpoint until stopped, starting over after transient store errors.
    async fn run(
        &self,
        status: &watch::Sender<ProcessorStatus>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), ProjectionError> {
        let mut retries = StoreRetries::default();
        loop {
            let mut progressed = false;
            let error = match self.run_once(status, &mut stop, &mut progressed).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let ProjectionError::Store { source, .. } = &error else {
                return Err(error);
            };
            let Some(delay) = retries.next_delay(&self.store_retry, source, progressed) else {
                return Err(error);
            };
            let attempt = retries.failures();
            tracing::warn!(
                projection = self.read_model.name(),
                error = %source,
                attempt,
                retry_in = ?delay,
                "projection processor: event store error, starting over from the checkpoint"
            );
            status.send_modify(|s| s.phase = Phase::Retrying { error, attempt });
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One run from the checkpoint; `progressed` is set once it applied a batch.
    async fn run_once(
        &self,
        status: &watch::Sender<ProcessorStatus>,
        stop: &mut watch::Receiver<bool>,
        progressed: &mut bool,
    ) -> Result<(), ProjectionError> {
        let after = self.load_checkpoint().await?;
        let head = self.head().await?;
        if let Some(m) = &self.metrics {
            m.projection_lag(self.read_model.name(), head, after);
        }
        let live = |p: Option<Position>| match head {
            None => true,
            Some(h) => p.is_some_and(|p| p >= h),
        };
        status.send_modify(|s| {
            s.position = after;
            s.phase = match head {
                Some(h) if !live(after) => Phase::CatchingUp { head: h },
                _ => Phase::Live,
            };
        });
        let mut stream = self.batches(after);
        loop {
            let batch = tokio::select! {
                biased;
                // A stop request, or the handle dropped.
                _ = stop.wait_for(|s| *s) => return Ok(()),
                batch = self.next_batch(&mut stream) => batch?,
            };
            // Applying is never interrupted by a stop: it finishes or fails as a whole.
            let (last, n) = self.apply_batch(batch).await?;
            *progressed = true;
            status.send_modify(|s| {
                s.position = Some(last);
                s.events_applied += n as u64;
                if live(Some(last)) {
                    s.phase = Phase::Live;
                }
            });
        }
    }

    /// The read model's events from after `after`, in batches.
    fn batches(&self, after: Option<Position>) -> Batches {
        batches(
            &*self.store,
            after,
            self.read_model.filter(),
            self.batch_size,
        )
    }

    async fn next_batch(
        &self,
        stream: &mut Batches,
    ) -> Result<Vec<RecordedEvent>, ProjectionError> {
        match stream.next().await {
            Some(Ok(batch)) => Ok(batch),
            Some(Err(source)) => Err(self.store_error(source)),
            None => Err(ProjectionError::SubscriptionEnded {
                projection: self.read_model.name().to_owned(),
            }),
        }
    }

    /// Decodes and applies one non-empty batch; the position of its last event and its size.
    async fn apply_batch(
        &self,
        batch: Vec<RecordedEvent>,
    ) -> Result<(Position, usize), ProjectionError> {
        let (Some(first), Some(last)) = (
            batch.first().map(|e| e.position),
            batch.last().map(|e| e.position),
        ) else {
            return Err(ProjectionError::SubscriptionEnded {
                projection: self.read_model.name().to_owned(),
            });
        };
        let n = batch.len();
        let name = self.read_model.name();
        let span = crate::spans::process_batch(name, &batch);
        let started = self.metrics.as_ref().map(|_| tokio::time::Instant::now());
        // The batch's types, for the metrics only (shared names, no copy of the strings).
        let types: Vec<eventfold_core::EventType> = match &self.metrics {
            Some(_) => batch.iter().map(|e| e.event_type.clone()).collect(),
            None => Vec::new(),
        };
        let mut events = Vec::with_capacity(n);
        for (i, recorded) in batch.into_iter().enumerate() {
            let position = recorded.position.0;
            let decoded = self.upcasters.decode(recorded);
            let envelope = decoded.map_err(|source| {
                if let (Some(m), Some(t)) = (&self.metrics, types.get(i)) {
                    m.count(name, true, [t.as_str()]);
                }
                ProjectionError::Decode {
                    projection: name.to_owned(),
                    position,
                    source,
                }
            })?;
            events.push(envelope);
        }
        let applied = span
            .instrument(self.read_model.apply(events, last))
            .await
            .inspect_err(|e| span.fail("projection_failed", e));
        if let (Some(m), Some(started)) = (&self.metrics, started) {
            let failed = applied.is_err();
            m.count(name, failed, types.iter().map(|t| t.as_str()));
            m.observe(name, failed, started.elapsed());
        }
        applied.map_err(|e| ProjectionError::Apply {
            projection: name.to_owned(),
            first: first.0,
            last: last.0,
            source: Arc::from(e),
        })?;
        if let Some(m) = &self.metrics {
            // The lag gauge is best effort: a failed read of the head leaves it as it was.
            if let Ok(head) = self.head().await {
                m.projection_lag(name, head, Some(last));
            }
        }
        Ok((last, n))
    }

    async fn load_checkpoint(&self) -> Result<Option<Position>, ProjectionError> {
        self.read_model
            .checkpoint()
            .await
            .map_err(|e| self.checkpoint_error("loading the checkpoint", e))
    }

    fn checkpoint_error(&self, action: &'static str, source: BoxError) -> ProjectionError {
        ProjectionError::Checkpoint {
            projection: self.read_model.name().to_owned(),
            action,
            source: Arc::from(source),
        }
    }

    fn store_error(&self, source: StoreError) -> ProjectionError {
        ProjectionError::Store {
            projection: self.read_model.name().to_owned(),
            source,
        }
    }
}

/// The newest event of `$all` that passes `filter`.
pub(crate) async fn head(
    store: &dyn EventStore,
    filter: &EventFilter,
) -> Result<Option<Position>, StoreError> {
    let mut read = ReadAll::backward(1).filter(filter.clone());
    for _ in 0..HEAD_PAGES_MAX {
        let slice = store.read_all(read.clone()).await?;
        if let Some(e) = slice.events.first() {
            return Ok(Some(e.position));
        }
        match slice.next {
            Some(p) => read = read.from(ReadFrom::At(p)),
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// Measures the lag of the started processor `projection` every [`LAG_REFRESH_INTERVAL`] (so
/// the gauge rises while it is stuck or retrying, not only after batches), until the processor
/// ends.
async fn refresh_lag(
    metrics: FrameworkMetrics,
    projection: String,
    store: Arc<dyn EventStore>,
    filter: EventFilter,
    status: watch::Receiver<ProcessorStatus>,
) {
    loop {
        tokio::time::sleep(LAG_REFRESH_INTERVAL).await;
        // An error: the processor's task ended (its status sender is gone).
        if status.has_changed().is_err()
            || matches!(status.borrow().phase, Phase::Stopped | Phase::Failed(_))
        {
            return;
        }
        if let Ok(head) = head(&*store, &filter).await {
            let position = status.borrow().position;
            metrics.projection_lag(&projection, head, position);
        }
    }
}

/// A running processor: its status, its lag, and the way to stop it. Dropping the handle stops
/// the processor after the batch in hand.
pub struct ProcessorHandle {
    name: String,
    filter: EventFilter,
    store: Arc<dyn EventStore>,
    status: watch::Receiver<ProcessorStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ProjectionError>>,
}

impl std::fmt::Debug for ProcessorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorHandle")
            .field("name", &self.name)
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl ProcessorHandle {
    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it has got to now.
    pub fn status(&self) -> ProcessorStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every change of status (after each batch).
    pub fn watch_status(&self) -> watch::Receiver<ProcessorStatus> {
        self.status.clone()
    }

    /// How far behind the store it is: its position against the newest event it reads.
    pub async fn lag(&self) -> Result<Lag, StoreError> {
        let position = self.status.borrow().position;
        let head = head(&*self.store, &self.filter).await?;
        Ok(Lag {
            position,
            head,
            lag_events: lag_events(head, position),
        })
    }

    /// Waits until the event at `position` (or a later one) is applied. An error when the
    /// processor stops or fails first.
    pub async fn wait_until(&self, position: Position) -> Result<ProcessorStatus, ProjectionError> {
        let mut rx = self.status.clone();
        let reached = |s: &ProcessorStatus| s.position.is_some_and(|p| p >= position);
        let waited = rx
            .wait_for(|s| reached(s) || matches!(s.phase, Phase::Stopped | Phase::Failed(_)))
            .await
            .map(|s| s.clone());
        // An error means the task ended: its last status is still there.
        let status = waited.unwrap_or_else(|_| rx.borrow().clone());
        if reached(&status) {
            return Ok(status);
        }
        match status.phase {
            Phase::Failed(e) => Err(e),
            _ => Err(ProjectionError::Stopped {
                projection: self.name.clone(),
            }),
        }
    }

    /// Stops the processor after the batch in hand and waits for it: `Err` when it had
    /// already failed.
    pub async fn stop(self) -> Result<(), ProjectionError> {
        self.stop.send_replace(true);
        self.join().await
    }

    /// Waits for the processor to end (it ends only when stopped or failed).
    pub async fn join(self) -> Result<(), ProjectionError> {
        let name = self.name;
        let _stop = self.stop;
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ProjectionError::TaskEnded {
                projection: name,
                reason: e.to_string(),
            }),
        }
    }
}
