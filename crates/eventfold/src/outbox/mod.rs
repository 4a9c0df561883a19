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
//! A sink failure is retried per [`RelayOptions::sink_retry`] (forever by default, logging a
//! warning per failure); when its attempts on one batch are used up the relay stops with
//! [`RelayError::SinkFailed`]. Nothing after a failing batch is published before it: order is
//! kept. A transient event store error (I/O, network) makes the relay start over from its
//! checkpoint after the delays of [`RelayOptions::store_retry`]; any other store error stops it
//! with [`RelayError::Store`] (the framework's one rule, see [`crate::retry`]).

mod webhook;

use std::convert::Infallible;
use std::sync::Arc;

use eventfold_core::{EventFilter, EventStore, RecordedEvent, StoreError};
use futures::StreamExt;

pub use webhook::{WebhookError, WebhookFormat, WebhookSink, WebhookSinkBuilder};

use crate::metrics::FrameworkMetrics;
use crate::retry::{RetryPolicy, StoreRetries};
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

/// How an [`OutboxRelay`] runs.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RelayOptions {
    /// Which events to publish (default: all).
    pub filter: EventFilter,
    /// Most events per published batch.
    pub batch_events_max: usize,
    /// Attempts to publish a batch and the delays between them; when they are used up the
    /// relay stops with [`RelayError::SinkFailed`]. Default: forever.
    pub sink_retry: RetryPolicy,
    /// Delays before the relay starts over from its checkpoint after a transient event store
    /// error; when its attempts are used up the relay stops with [`RelayError::Store`].
    /// Default: forever.
    pub store_retry: RetryPolicy,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            filter: EventFilter::default(),
            batch_events_max: 100,
            sink_retry: RetryPolicy::forever(),
            store_retry: RetryPolicy::forever(),
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

    /// Sets [`RelayOptions::sink_retry`].
    pub fn sink_retry(mut self, policy: RetryPolicy) -> Self {
        self.sink_retry = policy;
        self
    }

    /// Sets [`RelayOptions::store_retry`].
    pub fn store_retry(mut self, policy: RetryPolicy) -> Self {
        self.store_retry = policy;
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
    /// Reading the store or saving the checkpoint failed with an error retrying does not fix
    /// (or a transient one after [`RelayOptions::store_retry`] gave up).
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
    metrics: Option<FrameworkMetrics>,
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
            metrics: None,
        }
    }

    /// Counts into `metrics` (relay `name`) the events published and the sink's failed
    /// attempts, and keeps the relay's lag (`eventfold_outbox_lag`), measured at start and
    /// after each batch (one backward read of `$all` each time).
    pub fn with_metrics(mut self, metrics: FrameworkMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sets the lag gauge from `position` (the checkpoint) to the newest event the relay
    /// publishes; best effort: a failed read of the head leaves it as it was.
    async fn measure_lag(&self, position: Option<eventfold_core::Position>) {
        if let Some(m) = &self.metrics
            && let Ok(head) = crate::projection::head(&*self.store, &self.options.filter).await
        {
            m.outbox_lag(&self.name, head, position);
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

    /// Publishes from the checkpoint on, forever (catch-up, then live), until an error it
    /// does not retry.
    pub async fn run(self) -> Result<Infallible, RelayError> {
        let mut retries = StoreRetries::default();
        loop {
            let mut progressed = false;
            let Err(error) = self.run_once(&mut progressed).await;
            let RelayError::Store { source, .. } = &error else {
                return Err(error);
            };
            let Some(delay) = retries.next_delay(&self.options.store_retry, source, progressed)
            else {
                return Err(error);
            };
            tracing::warn!(
                relay = %self.name,
                error = %source,
                retry_in = ?delay,
                "outbox relay: event store error, starting over from the checkpoint"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One run from the checkpoint; `progressed` is set once it saved a checkpoint.
    async fn run_once(&self, progressed: &mut bool) -> Result<Infallible, RelayError> {
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
        self.measure_lag(after).await;
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
            *progressed = true;
            if let Some(m) = &self.metrics {
                m.outbox_published(&self.name, batch.len());
            }
            self.measure_lag(Some(last)).await;
        }
    }

    async fn publish(
        &self,
        batch: &[RecordedEvent],
        first: u64,
        last: u64,
    ) -> Result<(), RelayError> {
        // The sink runs inside the span, so a sink that sends (a webhook) can carry it on.
        let span = crate::spans::publish_batch(&self.name, batch);
        let (attempts, result) = span
            .instrument(self.options.sink_retry.run(
                || self.sink.publish(batch),
                |_| true,
                |attempt, error, delay| {
                    if let Some(m) = &self.metrics {
                        m.outbox_failure(&self.name);
                    }
                    tracing::warn!(
                        relay = %self.name,
                        attempt,
                        first,
                        last,
                        error = %error,
                        retry_in = ?delay,
                        "outbox sink failed; retrying the batch"
                    );
                },
            ))
            .await;
        if let Err(e) = &result {
            span.fail("sink_failed", e);
            if let Some(m) = &self.metrics {
                m.outbox_failure(&self.name);
            }
        }
        result.map_err(|source| RelayError::SinkFailed {
            relay: self.name.clone(),
            attempts,
            first,
            last,
            source,
        })
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
