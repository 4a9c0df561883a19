use std::marker::PhantomData;
use std::sync::Arc;

use eventfold_core::{EventFilter, EventStore, Position, RecordedEvent, StoreError};
use futures::StreamExt;
use tokio::sync::watch;

use super::EventHandler;
use super::dead_letter::{DeadLetter, DeadLetters};
use super::observe::{HandlerObserver, Observer};
use super::retry::decode_and_handle;
use super::running::{HandlerStats, RunnerError, RunningHandler, StoreRetrying, stopped};
use crate::checkpoint::CheckpointStore;
use crate::event::DomainEvent;
use crate::projection::filter_for;
use crate::retry::{RetryPolicy, StoreRetries};
use crate::subscription::batches;
use crate::upcast::Upcasters;

/// Largest batch read from `$all` by default.
const BATCH_EVENTS_MAX_DEFAULT: usize = 100;

/// Runs an [`EventHandler`] over an event store's `$all`, from its checkpoint, history first
/// and then live.
///
/// - It reads only the event types of `E` (and, if set, one stream category), in batches
///   ([`batches`]).
/// - Each event is handled under the [`RetryPolicy`], in-process; when the last attempt fails
///   (or one fails with [`Permanent`](super::Permanent), or the event does not decode) it is
///   written to the handler's dead-letter stream (`deadletter-{handler}`, see [`DeadLetters`])
///   and the runner carries on with the next event: one poison event never blocks the rest.
/// - The checkpoint (named after the handler) is saved after each batch, once every event of
///   the batch was handled or dead-lettered, and on stop after the last finished event. After a
///   crash, at most the events of one batch reach the handler again: delivery is at least once
///   (wrap the handler in [`Idempotent`](super::Idempotent) where that matters).
/// - A transient store error (reading events, saving the checkpoint, writing a dead letter:
///   [`StoreError::Storage`], [`StoreError::Backend`], [`StoreError::Unavailable`], such as a
///   remote server's network error)
///   makes it start over from its checkpoint after the delays of
///   [`HandlerRunner::store_retry`] (forever by default), logging a warning each time and
///   showing it in [`HandlerStats::retrying`]; the events of the unfinished batch reach the
///   handler again. Any other store error stops it with [`RunnerError::Store`].
pub struct HandlerRunner<E, H> {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    handler: Arc<H>,
    retry: RetryPolicy,
    store_retry: RetryPolicy,
    upcasters: Upcasters,
    batch_events_max: usize,
    category: Option<String>,
    observer: Observer,
    _events: PhantomData<fn() -> E>,
}

impl<E, H> std::fmt::Debug for HandlerRunner<E, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerRunner")
            .field("retry", &self.retry)
            .field("store_retry", &self.store_retry)
            .field("batch_events_max", &self.batch_events_max)
            .field("category", &self.category)
            .field("observer", &self.observer)
            .finish_non_exhaustive()
    }
}

/// What a replay of dead letters did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters the handler now handled.
    pub replayed: u64,
    /// Dead letters that failed again: each was written again as a new dead letter.
    pub failed_again: u64,
}

impl<E: DomainEvent, H: EventHandler<E>> HandlerRunner<E, H> {
    /// `handler` over `store`, its checkpoint in `checkpoints`, with the default
    /// [`RetryPolicy`] and no upcasters. To share one handler between runners, pass an
    /// `Arc<H>` (it is a handler too).
    pub fn new(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        handler: H,
    ) -> Self {
        HandlerRunner {
            store,
            checkpoints,
            handler: Arc::new(handler),
            retry: RetryPolicy::default(),
            store_retry: RetryPolicy::forever(),
            upcasters: Upcasters::new(),
            batch_events_max: BATCH_EVENTS_MAX_DEFAULT,
            category: None,
            observer: Observer::default(),
            _events: PhantomData,
        }
    }

    /// Retries the handler per `policy` (then dead-letters the event).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Delays before the runner starts over from its checkpoint after a transient event store
    /// error; once its attempts are used up the runner stops with [`RunnerError::Store`].
    /// Default: [`RetryPolicy::forever`].
    pub fn store_retry(mut self, policy: RetryPolicy) -> Self {
        self.store_retry = policy;
        self
    }

    /// Decodes old schema versions with `upcasters`.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Reads at most `n` events per batch (and so saves the checkpoint at least every `n`
    /// events).
    pub fn batch_events_max(mut self, n: usize) -> Self {
        self.batch_events_max = n.max(1);
        self
    }

    /// Only events of streams in `category` (`order` for `order-123`).
    pub fn category(mut self, category: impl Into<String>) -> Self {
        self.category = Some(category.into());
        self
    }

    /// Tells `observer` how long each event took, from its first attempt to success or to
    /// being dead-lettered (retry delays included), for the program's metrics. Events of types
    /// `E` does not know are not handled and not reported; nor are replays of dead letters.
    pub fn observer(mut self, observer: Arc<dyn HandlerObserver>) -> Self {
        self.observer = Observer::new(observer);
        self
    }

    /// The handler.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    fn name(&self) -> &str {
        self.handler.name()
    }

    fn store_error(&self, source: StoreError) -> RunnerError {
        RunnerError::store(self.name(), source)
    }

    fn filter(&self) -> EventFilter {
        EventFilter {
            category: self.category.clone(),
            ..filter_for::<E>()
        }
    }

    /// Starts the runner on its own task. Dropping the returned [`RunningHandler`] stops it
    /// too (at the next event).
    pub fn spawn(self) -> RunningHandler {
        let name = self.name().to_owned();
        RunningHandler::spawn(
            name,
            |stop, stats| async move { self.run(stop, &stats).await },
        )
    }

    /// Runs until `stop` turns `true` (or its sender is dropped), reporting into `stats`;
    /// starts over from the checkpoint after a transient store error (see
    /// [`HandlerRunner::store_retry`]).
    pub async fn run(
        &self,
        mut stop: watch::Receiver<bool>,
        stats: &watch::Sender<HandlerStats>,
    ) -> Result<(), RunnerError> {
        let mut retries = StoreRetries::default();
        loop {
            let mut progressed = false;
            let error = match self.run_once(&mut stop, stats, &mut progressed).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let RunnerError::Store { source, .. } = &error else {
                return Err(error);
            };
            if *stop.borrow() {
                // Saving the checkpoint on the way out failed: say so rather than retry.
                return Err(error);
            }
            let Some(delay) = retries.next_delay(&self.store_retry, source, progressed) else {
                return Err(error);
            };
            let attempt = retries.failures();
            tracing::warn!(
                handler = self.name(),
                error = %source,
                attempt,
                retry_in = ?delay,
                "handler runner: event store error, starting over from the checkpoint"
            );
            stats.send_modify(|s| {
                s.store_errors += 1;
                s.retrying = Some(StoreRetrying {
                    error: source.to_string(),
                    attempt,
                });
            });
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One run from the checkpoint; `progressed` is set once it saved a checkpoint.
    async fn run_once(
        &self,
        stop: &mut watch::Receiver<bool>,
        stats: &watch::Sender<HandlerStats>,
        progressed: &mut bool,
    ) -> Result<(), RunnerError> {
        let name = self.name().to_owned();
        let after = self
            .checkpoints
            .load(&name)
            .await
            .map_err(|e| self.store_error(e))?;
        stats.send_modify(|s| {
            s.checkpoint = after;
            s.retrying = None;
        });
        let mut batches = batches(&*self.store, after, self.filter(), self.batch_events_max);
        loop {
            let next = tokio::select! {
                biased;
                () = stopped(stop) => return Ok(()),
                next = batches.next() => next,
            };
            let batch = match next {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => return Err(self.store_error(e)),
                None => {
                    return Err(RunnerError::Ended {
                        handler: name,
                        reason: "the store's subscription ended".into(),
                    });
                }
            };
            let mut last_done: Option<Position> = None;
            for recorded in batch {
                let position = recorded.position;
                tokio::select! {
                    biased;
                    () = stopped(stop) => {
                        // Abandon the event in hand; keep what was finished.
                        if let Some(p) = last_done {
                            self.save(p, stats).await?;
                        }
                        return Ok(());
                    }
                    r = self.process(recorded, stats) => r?,
                }
                last_done = Some(position);
            }
            if let Some(p) = last_done {
                self.save(p, stats).await?;
                *progressed = true;
            }
        }
    }

    async fn save(
        &self,
        position: Position,
        stats: &watch::Sender<HandlerStats>,
    ) -> Result<(), RunnerError> {
        self.checkpoints
            .save(self.name(), position)
            .await
            .map_err(|e| self.store_error(e))?;
        stats.send_modify(|s| s.checkpoint = Some(position));
        Ok(())
    }

    /// Handles one event under the retry policy; dead-letters it when that fails.
    async fn process(
        &self,
        recorded: RecordedEvent,
        stats: &watch::Sender<HandlerStats>,
    ) -> Result<(), RunnerError> {
        if !E::knows(recorded.event_type.as_str()) {
            return Ok(());
        }
        let started = self.observer.start();
        let decoded = self.upcasters.decode::<E>(recorded.clone());
        let handled = decode_and_handle(&*self.handler, decoded, &self.retry).await;
        let event_type = recorded.event_type.as_str();
        let Err((attempts, error)) =
            self.observer
                .report_retried(started, self.name(), event_type, handled, stats)
        else {
            return Ok(());
        };
        let letter = DeadLetter {
            handler: self.name().to_owned(),
            original: recorded,
            error,
            attempts,
            position: None,
        };
        DeadLetters::new(self.store.clone())
            .write(&letter)
            .await
            .map_err(|e| self.store_error(e))?;
        tracing::error!(handler = self.name(), id = %letter.original.id, stream = %letter.original.stream, attempts, error = %letter.error, "event dead-lettered");
        stats.send_modify(|s| s.record_dead_lettered(attempts));
        Ok(())
    }

    /// Runs the handler again on its dead letters not replayed before (after a fix, say), each
    /// under the retry policy. One that fails again is written again as a new dead letter (with
    /// the attempts added up), to be replayed by a later call. Where replay got to is kept in
    /// the checkpoint store as `{handler}.deadletter-replay`.
    pub async fn replay_dead_letters(&self) -> Result<ReplayReport, RunnerError> {
        let cursor = format!("{}.deadletter-replay", self.name());
        let after = self
            .checkpoints
            .load(&cursor)
            .await
            .map_err(|e| self.store_error(e))?;
        let dead_letters = DeadLetters::new(self.store.clone());
        let letters = dead_letters
            .list(self.name())
            .await
            .map_err(|e| self.store_error(e))?;
        let mut report = ReplayReport::default();
        for letter in letters {
            let Some(at) = letter.position else { continue };
            if after.is_some_and(|a| at <= a) {
                continue;
            }
            let decoded = self.upcasters.decode::<E>(letter.original.clone());
            match decode_and_handle(&*self.handler, decoded, &self.retry).await {
                Ok(_) => report.replayed += 1,
                Err((attempts, error)) => {
                    let again = DeadLetter {
                        attempts: letter.attempts.saturating_add(attempts),
                        error,
                        position: None,
                        ..letter
                    };
                    dead_letters
                        .write(&again)
                        .await
                        .map_err(|e| self.store_error(e))?;
                    report.failed_again += 1;
                }
            }
            self.checkpoints
                .save(&cursor, at)
                .await
                .map_err(|e| self.store_error(e))?;
        }
        Ok(report)
    }
}
