use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use eventfold_client::{Client, GroupDelivery, NackAction};
use tokio::sync::watch;

use super::EventHandler;
use super::delivered::{Delivered, handle_delivery};
use super::observe::{HandlerObserver, Observer};
use super::running::{HandlerStats, RunnerError, RunningHandler, stopped};
use crate::event::DomainEvent;
use crate::retry::RetryPolicy;
use crate::upcast::Upcasters;

/// Deliveries taken per pull by default.
const PULL_MAX_DEFAULT: usize = 100;
/// How long a pull waits for a first delivery by default.
const PULL_WAIT_DEFAULT: Duration = Duration::from_secs(5);

/// Runs an [`EventHandler`] as a consumer of a server's consumer group (`/subscriptions`), so
/// several processes share the work and the server keeps the checkpoint.
///
/// It pulls deliveries, handles each once, then acks the ones that succeeded (one request per
/// pull) and nacks each failure with `retry`: the server delivers it again after the group's
/// backoff and parks it after `max_deliveries` attempts — the server's parked events are this
/// runner's dead letters (`eventfold group parked`, `$parked-{group}`). A [`Permanent`](super::Permanent) failure
/// or an event that does not decode is parked at once. Events of types `E` does not know are
/// acked without calling the handler. Delivery is at least once (an ack lost in a crash means a
/// redelivery): wrap the handler in [`Idempotent`](super::Idempotent) where that matters.
///
/// A failed pull is tried again with the reconnect policy's delays (the server restarting,
/// say); when those are used up the runner stops with the error.
pub struct GroupRunner<E, H> {
    client: Client,
    group: String,
    consumer: String,
    handler: Arc<H>,
    upcasters: Upcasters,
    pull_max: usize,
    pull_wait: Duration,
    reconnect: RetryPolicy,
    observer: Observer,
    _events: PhantomData<fn() -> E>,
}

impl<E, H> std::fmt::Debug for GroupRunner<E, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupRunner")
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("pull_max", &self.pull_max)
            .field("pull_wait", &self.pull_wait)
            .field("observer", &self.observer)
            .finish_non_exhaustive()
    }
}

impl<E: DomainEvent, H: EventHandler<E>> GroupRunner<E, H> {
    /// `handler` consuming `group` (which must exist: `eventfold group create` or
    /// [`Client::put_group`]) through `client`, as the consumer named after the handler.
    pub fn new(client: Client, group: impl Into<String>, handler: H) -> Self {
        let consumer = handler.name().to_owned();
        GroupRunner {
            client,
            group: group.into(),
            consumer,
            handler: Arc::new(handler),
            upcasters: Upcasters::new(),
            pull_max: PULL_MAX_DEFAULT,
            pull_wait: PULL_WAIT_DEFAULT,
            reconnect: RetryPolicy::default(),
            observer: Observer::default(),
            _events: PhantomData,
        }
    }

    /// The consumer name (to run several instances, give each its own).
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = name.into();
        self
    }

    /// Decodes old schema versions with `upcasters`.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// At most `n` deliveries per pull (keep `n` handled well within the group's ack timeout).
    pub fn pull_max(mut self, n: usize) -> Self {
        self.pull_max = n.max(1);
        self
    }

    /// How long a pull waits on the server for a first delivery.
    pub fn pull_wait(mut self, wait: Duration) -> Self {
        self.pull_wait = wait;
        self
    }

    /// How a failed pull is tried again before the runner gives up.
    pub fn reconnect(mut self, policy: RetryPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Tells `observer` how long the handler took on each delivery (one attempt; the server
    /// retries), for the program's metrics. Deliveries of types `E` does not know are acked
    /// without handling and not reported. The server measures delivery to ack or nack on its
    /// side too (`eventfold_event_processing_duration_seconds`).
    pub fn observer(mut self, observer: Arc<dyn HandlerObserver>) -> Self {
        self.observer = Observer::new(observer);
        self
    }

    fn store_error(&self, source: eventfold_core::StoreError) -> RunnerError {
        RunnerError::store(self.handler.name(), source)
    }

    /// Starts the runner on its own task. Dropping the returned [`RunningHandler`] stops it
    /// too (after the pull in hand).
    pub fn spawn(self) -> RunningHandler {
        let name = self.handler.name().to_owned();
        RunningHandler::spawn(
            name,
            |stop, stats| async move { self.run(stop, &stats).await },
        )
    }

    /// Runs until `stop` turns `true` (or its sender is dropped), reporting into `stats`.
    pub async fn run(
        &self,
        mut stop: watch::Receiver<bool>,
        stats: &watch::Sender<HandlerStats>,
    ) -> Result<(), RunnerError> {
        let mut failed_pulls = 0;
        loop {
            let pulled = tokio::select! {
                biased;
                () = stopped(&mut stop) => return Ok(()),
                r = self.client.group_pull(&self.group, &self.consumer, self.pull_max, self.pull_wait) => r,
            };
            let deliveries = match pulled {
                Ok(d) => {
                    failed_pulls = 0;
                    d
                }
                Err(e) => {
                    failed_pulls += 1;
                    let Some(delay) = self.reconnect.retry_after(failed_pulls) else {
                        return Err(self.store_error(e));
                    };
                    tracing::warn!(group = %self.group, error = %e, ?delay, "pull failed: trying again");
                    tokio::select! {
                        biased;
                        () = stopped(&mut stop) => return Ok(()),
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            let mut acks = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                if *stop.borrow() {
                    // The rest times out on the server and goes to another consumer.
                    break;
                }
                let id = d.delivery_id.clone();
                match self.process(d).await {
                    Ok(handled) => {
                        acks.push(id);
                        if handled {
                            stats.send_modify(|s| s.handled += 1);
                        }
                    }
                    Err((action, reason)) => {
                        self.client
                            .group_nack(&self.group, std::slice::from_ref(&id), action, &reason)
                            .await
                            .map_err(|e| self.store_error(e))?;
                        stats.send_modify(|s| {
                            s.failed_attempts += 1;
                            if action == NackAction::Park {
                                s.dead_lettered += 1;
                            }
                        });
                    }
                }
            }
            if !acks.is_empty() {
                self.client
                    .group_ack(&self.group, &acks)
                    .await
                    .map_err(|e| self.store_error(e))?;
            }
        }
    }

    /// Handles one delivery: `Ok(true)` handled, `Ok(false)` not an event of `E` (ack it
    /// anyway), `Err` the nack to send.
    async fn process(&self, d: GroupDelivery) -> Result<bool, (NackAction, String)> {
        let delivered = handle_delivery(
            &*self.handler,
            &self.upcasters,
            &self.observer,
            d.event,
            d.attempt,
        )
        .await;
        match delivered {
            Delivered::Foreign => Ok(false),
            Delivered::Handled => Ok(true),
            Delivered::Failed { permanent, reason } => {
                let action = if permanent {
                    NackAction::Park
                } else {
                    NackAction::Retry
                };
                tracing::debug!(group = %self.group, attempt = d.attempt, ?action, "nacked");
                Err((action, reason))
            }
        }
    }
}
