use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use eventfold_transport::{ConsumerGroup, Topic, Transport};
use tokio::sync::watch;

use super::EventHandler;
use super::delivered::handle_delivery;
use super::observe::{HandlerObserver, Observer};
use super::running::{HandlerStats, RunnerError, RunningHandler};
use super::source::TransportSource;
use crate::event::DomainEvent;
use crate::retry::RetryPolicy;
use crate::upcast::Upcasters;

/// Runs an [`EventHandler`] as a consumer group of a topic on a message broker (any
/// [`Transport`]: Redis Streams, RabbitMQ, Kafka, NATS JetStream, or the in-process
/// [`MemoryTransport`](eventfold_transport::MemoryTransport)), so events published there (by
/// [`publish_events`](eventfold_transport::publish_events), or by another service) reach the
/// same handler that runs on a store or a server's group. Every group gets every event; the
/// runners of one group share them.
///
/// - Each delivery is decoded as `E` (with the [`Upcasters`]) and handled once, then acked.
///   Events of types `E` does not know are acked without calling the handler; a message that
///   is not an eventfold event is dead-lettered with the reason by the transport's
///   [`Consumer`](eventfold_transport::Consumer) and never reaches it.
/// - A failed delivery is retried by the broker: the [`RetryPolicy`] is the broker's backoff
///   ([`RetryPolicy::backoff`], without jitter) and its attempts are the group's
///   `max_deliveries` ([`RetryPolicy::max_deliveries`]). When they are used up, or the handler
///   fails with [`Permanent`](super::Permanent), or the event does not decode, it goes to the
///   group's dead letters through the transport with the handler's error as the reason
///   ([`Transport::dead_letters`] lists them, [`Transport::replay_dead_letters`] hands them
///   back).
/// - Delivery is at least once (an ack lost in a crash, an ack timeout, a publisher that
///   published twice): wrap the handler in [`Idempotent`](super::Idempotent), whose
///   [`ProcessedIds`](crate::ProcessedIds) skip an event id already processed (it is acked
///   without calling the inner handler).
/// - A broker that is unavailable (opening the group, receiving, settling) is subscribed again
///   after the delays of [`TransportRunner::reconnect`]; when those are used up, or on an error
///   retrying cannot fix, the runner stops with [`RunnerError::Transport`].
/// - Stopping finishes and settles the delivery in hand, then closes the subscriber (what it
///   had received and not settled is delivered again).
pub struct TransportRunner<E, H> {
    source: TransportSource,
    handler: Arc<H>,
    upcasters: Upcasters,
    observer: Observer,
    _events: PhantomData<fn() -> E>,
}

impl<E, H> std::fmt::Debug for TransportRunner<E, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportRunner")
            .field("source", &self.source)
            .field("observer", &self.observer)
            .finish_non_exhaustive()
    }
}

impl<E: DomainEvent, H: EventHandler<E>> TransportRunner<E, H> {
    /// `handler` consuming `topic` on `transport` as `group` (created on first subscribe),
    /// with the default [`RetryPolicy`], the transport's default ack timeout and prefetch, and
    /// no upcasters. To share one handler between runners, pass an `Arc<H>`.
    pub fn new(
        transport: Arc<dyn Transport>,
        topic: Topic,
        group: ConsumerGroup,
        handler: H,
    ) -> Self {
        Self::from_source(TransportSource::new(transport, topic, group), handler)
    }

    /// `handler` consuming from `source` (its topic, group, retry and reconnect policies).
    pub fn from_source(source: TransportSource, handler: H) -> Self {
        TransportRunner {
            source,
            handler: Arc::new(handler),
            upcasters: Upcasters::new(),
            observer: Observer::default(),
            _events: PhantomData,
        }
    }

    /// Retries failed deliveries per `policy` (its delays, without jitter, and its attempts as
    /// the group's `max_deliveries`), then dead-letters them.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.source = self.source.retry(policy);
        self
    }

    /// How subscribing again after the broker was unavailable is tried before the runner gives
    /// up. Default: [`RetryPolicy::default`].
    pub fn reconnect(mut self, policy: RetryPolicy) -> Self {
        self.source = self.source.reconnect(policy);
        self
    }

    /// A delivery neither acked nor retried within `timeout` is delivered again (keep it well
    /// above the handler's longest run). Checked when the runner subscribes.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.source = self.source.ack_timeout(timeout);
        self
    }

    /// At most `n` deliveries handed to this runner and not yet settled. Checked when the
    /// runner subscribes.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.source = self.source.prefetch(n);
        self
    }

    /// Decodes old schema versions with `upcasters`.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Tells `observer` how long the handler took on each delivery (one attempt; the broker
    /// retries) with the delivery's attempt number, for the program's metrics. Deliveries of
    /// types `E` does not know are acked without handling and not reported.
    pub fn observer(mut self, observer: Arc<dyn HandlerObserver>) -> Self {
        self.observer = Observer::new(observer);
        self
    }

    /// The handler.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    /// Starts the runner on its own task. Dropping the returned [`RunningHandler`] stops it
    /// too (after the delivery in hand).
    pub fn spawn(self) -> RunningHandler {
        let name = self.handler.name().to_owned();
        RunningHandler::spawn(
            name,
            |stop, stats| async move { self.run(stop, &stats).await },
        )
    }

    /// Runs until `stop` turns `true` (or its sender is dropped), reporting into `stats`;
    /// subscribes again after the broker was unavailable (see [`TransportRunner::reconnect`]).
    pub async fn run(
        &self,
        stop: watch::Receiver<bool>,
        stats: &watch::Sender<HandlerStats>,
    ) -> Result<(), RunnerError> {
        self.source
            .run(self.handler.name(), stop, stats, |event, attempt| {
                handle_delivery(
                    &*self.handler,
                    &self.upcasters,
                    &self.observer,
                    event,
                    attempt,
                )
            })
            .await
    }
}
