//! Where the framework's consumers on a message broker read from, and the one way they
//! subscribe, reconnect and settle deliveries: shared by [`TransportRunner`](super::TransportRunner),
//! [`TransportProjection`](crate::projection::TransportProjection) and a
//! [`SagaManager`](crate::SagaManager) fed from a broker.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventfold_core::RecordedEvent;
use eventfold_transport::{
    Consumer, ConsumerGroup, Delivery, Failed, SubscribeSettings, Topic, Transport, TransportError,
    TransportResult,
};
use tokio::sync::watch;

use super::delivered::Delivered;
use super::running::{HandlerStats, RunnerError, stopped};
use crate::retry::RetryPolicy;

/// A topic and a consumer group on a message broker (any [`Transport`]), with how its
/// deliveries are retried and how the broker is subscribed again after an outage.
///
/// - [`TransportSource::retry`]: a failed delivery is delivered again after the policy's delays
///   ([`RetryPolicy::backoff`], without jitter) and dead-lettered on the broker once its
///   attempts ([`RetryPolicy::max_deliveries`], the group's `max_deliveries`) are used up.
/// - [`TransportSource::reconnect`]: delays before subscribing again after the broker was
///   unavailable; when they are used up the consumer stops with the transport's error.
#[derive(Clone)]
pub struct TransportSource {
    transport: Arc<dyn Transport>,
    topic: Topic,
    group: ConsumerGroup,
    retry: RetryPolicy,
    reconnect: RetryPolicy,
    ack_timeout: Duration,
    prefetch: usize,
}

impl std::fmt::Debug for TransportSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportSource")
            .field("broker", &self.transport.broker())
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("retry", &self.retry)
            .field("reconnect", &self.reconnect)
            .field("ack_timeout", &self.ack_timeout)
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

impl TransportSource {
    /// `topic` on `transport`, consumed as `group` (created on first subscribe), with the
    /// default [`RetryPolicy`] for deliveries and reconnects, and the transport's default ack
    /// timeout and prefetch.
    pub fn new(transport: Arc<dyn Transport>, topic: Topic, group: ConsumerGroup) -> Self {
        let defaults = SubscribeSettings::default();
        TransportSource {
            transport,
            topic,
            group,
            retry: RetryPolicy::default(),
            reconnect: RetryPolicy::default(),
            ack_timeout: defaults.ack_timeout,
            prefetch: defaults.prefetch,
        }
    }

    /// Retries failed deliveries per `policy` (its delays, without jitter, and its attempts as
    /// the group's `max_deliveries`), then dead-letters them.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How subscribing again after the broker was unavailable is tried before giving up.
    /// Default: [`RetryPolicy::default`].
    pub fn reconnect(mut self, policy: RetryPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// A delivery neither acked nor retried within `timeout` is delivered again (keep it well
    /// above the longest handling). Checked when subscribing.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// At most `n` deliveries handed to the consumer and not yet settled. Checked when
    /// subscribing.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n;
        self
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The consumer group.
    pub fn group(&self) -> &ConsumerGroup {
        &self.group
    }

    /// The delay before subscribing again after the `failures`-th consecutive outage, `None`
    /// once the reconnect policy gives up.
    pub(crate) fn reconnect_after(&self, failures: u32) -> Option<Duration> {
        self.reconnect.retry_after(failures)
    }

    fn settings(&self) -> SubscribeSettings {
        SubscribeSettings {
            max_deliveries: self.retry.max_deliveries(),
            ack_timeout: self.ack_timeout,
            prefetch: self.prefetch,
        }
    }

    /// Subscribes the group.
    pub(crate) async fn open(&self) -> TransportResult<Consumer> {
        Consumer::open(
            &*self.transport,
            &self.topic,
            &self.group,
            &self.settings(),
            self.retry.backoff(),
        )
        .await
    }

    /// Settles `delivery` as `delivered` says (ack, retry later, dead-letter) and counts it in
    /// `stats`; `consumer` names the consumer in the logs.
    pub(crate) async fn settle(
        &self,
        consumer: &mut Consumer,
        delivery: Delivery,
        delivered: Delivered,
        name: &str,
        stats: &watch::Sender<HandlerStats>,
    ) -> TransportResult<()> {
        match delivered {
            Delivered::Foreign => consumer.ack(delivery).await?,
            Delivered::Handled => {
                consumer.ack(delivery).await?;
                stats.send_modify(|s| s.handled += 1);
            }
            Delivered::Failed { permanent, reason } => {
                let (id, attempt) = (delivery.event.id, delivery.attempt);
                let dead = if permanent {
                    consumer.dead_letter(delivery, &reason).await?;
                    true
                } else {
                    consumer.fail(delivery, &reason).await? == Failed::DeadLettered
                };
                if dead {
                    tracing::error!(consumer = name, group = %self.group, %id, attempt, %reason, "event dead-lettered");
                }
                stats.send_modify(|s| {
                    s.failed_attempts += 1;
                    if dead {
                        s.dead_lettered += 1;
                    }
                });
            }
        }
        Ok(())
    }

    /// Consumes until `stop` turns `true` (or its sender is dropped): each delivery's event
    /// and attempt number go to `process`, whose answer settles it; reports into `stats`;
    /// subscribes again after the broker was unavailable, per [`TransportSource::reconnect`].
    /// `name` names the consumer in errors and logs.
    pub(crate) async fn run<F, Fut>(
        &self,
        name: &str,
        mut stop: watch::Receiver<bool>,
        stats: &watch::Sender<HandlerStats>,
        mut process: F,
    ) -> Result<(), RunnerError>
    where
        F: FnMut(RecordedEvent, u32) -> Fut,
        Fut: Future<Output = Delivered>,
    {
        let transport_error = |source| RunnerError::Transport {
            handler: name.to_owned(),
            source,
        };
        let mut failures = 0u32;
        loop {
            let opened = tokio::select! {
                biased;
                () = stopped(&mut stop) => return Ok(()),
                c = self.open() => c,
            };
            let error = match opened {
                Ok(consumer) => match self
                    .consume(
                        name,
                        consumer,
                        &mut stop,
                        stats,
                        &mut failures,
                        &mut process,
                    )
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if !error.is_retryable() {
                return Err(transport_error(error));
            }
            failures = failures.saturating_add(1);
            let Some(delay) = self.reconnect_after(failures) else {
                return Err(transport_error(error));
            };
            tracing::warn!(consumer = name, broker = self.transport.broker(), topic = %self.topic, group = %self.group, %error, attempt = failures, ?delay, "broker unavailable, subscribing again");
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Consumes through `consumer` until stopped (`Ok`, the consumer closed) or the transport
    /// fails (`Err`, the consumer dropped); `failures` is reset by each delivery received.
    async fn consume<F, Fut>(
        &self,
        name: &str,
        mut consumer: Consumer,
        stop: &mut watch::Receiver<bool>,
        stats: &watch::Sender<HandlerStats>,
        failures: &mut u32,
        process: &mut F,
    ) -> Result<(), TransportError>
    where
        F: FnMut(RecordedEvent, u32) -> Fut,
        Fut: Future<Output = Delivered>,
    {
        loop {
            let delivery = tokio::select! {
                biased;
                () = stopped(stop) => break,
                d = consumer.next() => d?,
            };
            *failures = 0;
            // Handling is never interrupted by a stop: it finishes and is settled.
            let delivered = process(delivery.event.clone(), delivery.attempt).await;
            self.settle(&mut consumer, delivery, delivered, name, stats)
                .await?;
        }
        close(consumer, name).await;
        Ok(())
    }
}

/// Closes `consumer`, logging a failure (its unsettled deliveries come back anyway).
pub(crate) async fn close(consumer: Consumer, name: &str) {
    if let Err(error) = consumer.close().await {
        tracing::warn!(consumer = name, %error, "closing the subscriber failed: its unsettled deliveries come back after the ack timeout");
    }
}
