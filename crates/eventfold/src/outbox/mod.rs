//! The outbox relay: publishes what was appended to the store to the outside world (a message
//! bus, a webhook, another process), at least once and in order.
//!
//! There is no separate outbox table to keep in step with the data: the event store *is* the
//! outbox. An event is appended once, atomically and durably, with the state change it
//! describes (it *is* the state change); the [`OutboxRelay`] then reads `$all` from its
//! checkpoint ([`crate::batches`] with an [`EventFilter`]), hands each batch to a [`Sink`], and
//! saves the checkpoint only after the sink confirmed. A crash between the two publishes the
//! batch again after the restart: **at least once**, in `$all` order. Receivers dedupe by
//! event id (the contract's `id`, also sent by [`WebhookSink`] in a header).
//!
//! A sink failure is retried with exponential backoff ([`RelayOptions::backoff`]); after
//! [`RelayOptions::max_attempts`] failed attempts on the same batch the relay stops with
//! [`RelayError::SinkFailed`] (`None`: retry forever, logging a warning per failure). Nothing
//! after a failing batch is published before it: order is kept.

mod webhook;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{EventFilter, EventStore, RecordedEvent, StoreError};
use futures::StreamExt;

pub use webhook::{WebhookError, WebhookFormat, WebhookSink, WebhookSinkBuilder};

use crate::{BoxError, CheckpointStore};

/// Where the relay publishes: a bus, a webhook, a channel.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Publishes `batch` (in `$all` order, never empty). `Ok` confirms the whole batch; after
    /// `Err` the same batch (or one starting with the same events) comes again.
    async fn publish(&self, batch: &[RecordedEvent]) -> Result<(), BoxError>;
}

#[async_trait::async_trait]
impl<T: Sink + ?Sized> Sink for Arc<T> {
    async fn publish(&self, batch: &[RecordedEvent]) -> Result<(), BoxError> {
        (**self).publish(batch).await
    }
}

/// Exponential backoff: `initial`, `initial × multiplier`, … capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// The factor between consecutive delays (at least 1).
    pub multiplier: u32,
}

impl Default for Backoff {
    /// 100 ms, doubling, at most 30 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2,
        }
    }
}

impl Backoff {
    /// A backoff from `initial` up to `max`, doubling.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            multiplier: 2,
        }
    }

    /// The delay after the `attempt`-th failure (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self
            .multiplier
            .max(1)
            .saturating_pow(attempt.saturating_sub(1));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// How an [`OutboxRelay`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayOptions {
    /// Which events to publish (default: all).
    pub filter: EventFilter,
    /// Most events per published batch.
    pub batch_events_max: usize,
    /// Delays between attempts to publish a batch.
    pub backoff: Backoff,
    /// Attempts per batch before the relay stops with [`RelayError::SinkFailed`]; `None`
    /// retries forever.
    pub max_attempts: Option<u32>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            filter: EventFilter::default(),
            batch_events_max: 100,
            backoff: Backoff::default(),
            max_attempts: None,
        }
    }
}

impl RelayOptions {
    /// Sets the filter.
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Sets the most events per batch (at least 1).
    pub fn batch_events_max(mut self, events: usize) -> Self {
        self.batch_events_max = events.max(1);
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the attempts per batch (`None`: forever).
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts.map(|a| a.max(1));
        self
    }
}

/// Why an outbox relay stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The sink failed every attempt on one batch.
    #[error(
        "outbox relay {relay}: the sink failed {attempts} times on the batch at positions {first}..={last}: {source}; fix the sink and restart the relay (it resumes with this batch)"
    )]
    SinkFailed {
        /// The relay.
        relay: String,
        /// Attempts made.
        attempts: u32,
        /// Position of the batch's first event.
        first: u64,
        /// Position of its last event.
        last: u64,
        /// The last failure.
        #[source]
        source: BoxError,
    },
    /// Reading the store or saving the checkpoint failed.
    #[error(
        "outbox relay {relay}: event store error: {source}; restart the relay once the store is available (it resumes at its checkpoint)"
    )]
    Store {
        /// The relay.
        relay: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

/// Publishes the store's events to a [`Sink`], at least once, in order, resuming at a
/// checkpoint. See the [module documentation](self).
pub struct OutboxRelay {
    name: String,
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    sink: Arc<dyn Sink>,
    options: RelayOptions,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    /// A relay named `name` (its checkpoint's name: `outbox-{name}`) from `store` to `sink`,
    /// checkpointing in `checkpoints`.
    pub fn new(
        name: impl Into<String>,
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        sink: impl Sink,
    ) -> Self {
        OutboxRelay {
            name: name.into(),
            store,
            checkpoints,
            sink: Arc::new(sink),
            options: RelayOptions::default(),
        }
    }

    /// Sets the options.
    pub fn with_options(mut self, options: RelayOptions) -> Self {
        self.options = options;
        self
    }

    /// The checkpoint name: `outbox-{name}`.
    pub fn checkpoint_name(&self) -> String {
        format!("outbox-{}", self.name)
    }

    /// Publishes from the checkpoint on, forever (catch-up, then live), until an error.
    pub async fn run(self) -> Result<Infallible, RelayError> {
        let checkpoint = self.checkpoint_name();
        let store_err = |source| RelayError::Store {
            relay: self.name.clone(),
            source,
        };
        let after = self
            .checkpoints
            .load(&checkpoint)
            .await
            .map_err(store_err)?;
        let mut batches = crate::batches(
            &*self.store,
            after,
            self.options.filter.clone(),
            self.options.batch_events_max,
        );
        loop {
            let batch = match batches.next().await {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => return Err(store_err(e)),
                None => return Err(store_err(StoreError::Closed)),
            };
            let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                continue;
            };
            let (first, last) = (first.position, last.position);
            self.publish(&batch, first.0, last.0).await?;
            self.checkpoints
                .save(&checkpoint, last)
                .await
                .map_err(store_err)?;
        }
    }

    async fn publish(
        &self,
        batch: &[RecordedEvent],
        first: u64,
        last: u64,
    ) -> Result<(), RelayError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let Err(source) = self.sink.publish(batch).await else {
                return Ok(());
            };
            if self.options.max_attempts.is_some_and(|max| attempt >= max) {
                return Err(RelayError::SinkFailed {
                    relay: self.name.clone(),
                    attempts: attempt,
                    first,
                    last,
                    source,
                });
            }
            let delay = self.options.backoff.delay(attempt);
            tracing::warn!(
                relay = %self.name,
                attempt,
                first,
                last,
                error = %source,
                retry_in = ?delay,
                "outbox sink failed; retrying the batch"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// An in-process sink: every event goes into a bounded tokio channel, in order. `publish`
/// waits while the channel is full (back-pressure on the relay) and fails once the receiver
/// is dropped.
#[derive(Clone, Debug)]
pub struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<RecordedEvent>,
}

impl ChannelSink {
    /// A sink and the receiver of its events, holding at most `capacity` (at least 1) events.
    pub fn new(capacity: usize) -> (Self, tokio::sync::mpsc::Receiver<RecordedEvent>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        (ChannelSink { tx }, rx)
    }

    /// A sink into an existing channel.
    pub fn from_sender(tx: tokio::sync::mpsc::Sender<RecordedEvent>) -> Self {
        ChannelSink { tx }
    }
}

#[async_trait::async_trait]
impl Sink for ChannelSink {
    async fn publish(&self, batch: &[RecordedEvent]) -> Result<(), BoxError> {
        for event in batch {
            self.tx
                .send(event.clone())
                .await
                .map_err(|_| "the receiver of the channel sink was dropped")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }
}
