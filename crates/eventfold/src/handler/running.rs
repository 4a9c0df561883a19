use std::future::Future;

use eventfold_core::{Position, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a running handler has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// Events the handler finished (succeeded on some attempt, or skipped as already done).
    pub handled: u64,
    /// Failed attempts (each retry, each nack, each failed broker delivery).
    pub failed_attempts: u64,
    /// Events given up on: written to the dead-letter stream, kept as dead letters on the bus,
    /// parked on the server or dead-lettered on the broker by this runner.
    pub dead_lettered: u64,
    /// The last saved checkpoint (store runner only).
    pub checkpoint: Option<Position>,
    /// Transient event store errors the runner started over after (store runner only).
    pub store_errors: u64,
    /// Set while the runner waits to start over from its checkpoint after a transient event
    /// store error (store runner only); cleared once it has reloaded its checkpoint.
    pub retrying: Option<StoreRetrying>,
    /// Why the runner stopped, when it stopped on an error.
    pub error: Option<String>,
}

impl HandlerStats {
    /// Counts an event handled after `attempts` attempts.
    pub(crate) fn record_handled(&mut self, attempts: u32) {
        self.handled += 1;
        self.failed_attempts += u64::from(attempts.saturating_sub(1));
    }

    /// Counts an event given up on after `attempts` failed attempts.
    pub(crate) fn record_dead_lettered(&mut self, attempts: u32) {
        self.failed_attempts += u64::from(attempts);
        self.dead_lettered += 1;
    }
}

/// A store runner waiting out its `store_retry` delay after a transient event store error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreRetrying {
    /// The store's error, as text.
    pub error: String,
    /// Consecutive failed runs so far (1 after the first failure, and again after a run that
    /// saved a checkpoint).
    pub attempt: u32,
}

/// Why a runner stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// The store (or server) failed: reading events, saving the checkpoint or writing a dead
    /// letter. For the [`HandlerRunner`](super::HandlerRunner): with an error retrying cannot
    /// fix, or a transient one after its `store_retry` policy gave up.
    #[error(
        "handler {handler}: {source}; the runner stopped; start it again to continue from its last checkpoint"
    )]
    Store {
        /// The handler.
        handler: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The broker failed ([`TransportRunner`](super::TransportRunner)): with an error retrying
    /// cannot fix, or an unavailable broker after its `reconnect` policy gave up. What was
    /// delivered and not acked is delivered again.
    #[error(
        "handler {handler}: {source}; the runner stopped; start it again to continue (what was not acked is delivered again)"
    )]
    Transport {
        /// The handler.
        handler: String,
        /// The transport's error.
        #[source]
        source: eventfold_transport::TransportError,
    },
    /// The runner ended before what was waited for happened.
    #[error("handler {handler} stopped: {reason}")]
    Ended {
        /// The handler.
        handler: String,
        /// Why, as far as known.
        reason: String,
    },
    /// The runner's task panicked (a bug in the handler or the runner).
    #[error("handler {handler}'s task panicked: {reason}")]
    Panicked {
        /// The handler.
        handler: String,
        /// The panic.
        reason: String,
    },
}

/// A handler running on its own task (from any of the runners): watch what it did, wait for
/// it to get somewhere, stop it.
#[derive(Debug)]
pub struct RunningHandler {
    name: String,
    stop: watch::Sender<bool>,
    stats: watch::Receiver<HandlerStats>,
    task: JoinHandle<Result<(), RunnerError>>,
}

impl RunnerError {
    /// A store error of `handler`'s runner.
    pub(crate) fn store(handler: &str, source: StoreError) -> Self {
        RunnerError::Store {
            handler: handler.to_owned(),
            source,
        }
    }
}

impl RunningHandler {
    /// Spawns the runner `run` of the handler `name` on its own task: it gets the stop signal
    /// and the stats to report into; an error it ends with is published in the stats.
    pub(crate) fn spawn<Fut>(
        name: String,
        run: impl FnOnce(watch::Receiver<bool>, watch::Sender<HandlerStats>) -> Fut,
    ) -> Self
    where
        Fut: Future<Output = Result<(), RunnerError>> + Send + 'static,
    {
        let (stop, stop_rx) = watch::channel(false);
        let (stats_tx, stats) = watch::channel(HandlerStats::default());
        let running = run(stop_rx, stats_tx.clone());
        let task = tokio::spawn(async move {
            let result = running.await;
            finish(&stats_tx, result)
        });
        RunningHandler {
            name,
            stop,
            stats,
            task,
        }
    }

    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it did so far.
    pub fn stats(&self) -> HandlerStats {
        self.stats.borrow().clone()
    }

    /// Waits until `done` holds for the stats; an error when the runner ends first. Wrap it in
    /// a timeout where the condition may never hold.
    pub async fn wait_until(
        &mut self,
        mut done: impl FnMut(&HandlerStats) -> bool,
    ) -> Result<HandlerStats, RunnerError> {
        let name = self.name.clone();
        let seen = self
            .stats
            .wait_for(|s| done(s) || s.error.is_some())
            .await
            .map(|s| s.clone());
        match seen {
            Ok(s) if s.error.is_none() => Ok(s),
            Ok(s) => Err(RunnerError::Ended {
                handler: name,
                reason: s.error.unwrap_or_default(),
            }),
            Err(_) => Err(RunnerError::Ended {
                handler: name,
                reason: self
                    .stats
                    .borrow()
                    .error
                    .clone()
                    .unwrap_or_else(|| "it was stopped".into()),
            }),
        }
    }

    /// Waits until the checkpoint is at or after `position` (store runner).
    pub async fn wait_for_checkpoint(
        &mut self,
        position: Position,
    ) -> Result<HandlerStats, RunnerError> {
        self.wait_until(|s| s.checkpoint.is_some_and(|c| c >= position))
            .await
    }

    /// Asks the runner to stop (it finishes or abandons the event in hand, saves its
    /// checkpoint) and waits for it; its error if it had stopped on one.
    pub async fn stop(self) -> Result<(), RunnerError> {
        self.stop.send_replace(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(RunnerError::Panicked {
                handler: self.name,
                reason: e.to_string(),
            }),
        }
    }
}

/// Publishes `result`'s error into the stats before the task ends.
fn finish(
    stats: &watch::Sender<HandlerStats>,
    result: Result<(), RunnerError>,
) -> Result<(), RunnerError> {
    if let Err(e) = &result {
        tracing::error!(error = %e, "handler runner stopped");
        stats.send_modify(|s| s.error = Some(e.to_string()));
    }
    result
}

/// Resolves once `stop` turns `true` or its sender is gone (holding no borrow across awaits).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
