//! The framework's Prometheus metrics, exposed by the application on its own endpoint.
//!
//! The application makes one [`FrameworkMetrics`], registering its families into its own
//! [`prometheus_client::registry::Registry`], and hands clones of it to what it runs:
//! [`HandlerRunner::observer`](crate::HandlerRunner::observer) (and the other runners'
//! `observer`, and [`TransportProjection::observer`](crate::TransportProjection::observer): it is
//! a [`HandlerObserver`]; on the bus: [`Bus::subscribe_handler_observed`](crate::Bus::subscribe_handler_observed)),
//! [`ProjectionProcessor::metrics`](crate::ProjectionProcessor::metrics),
//! [`SagaManager::with_metrics`](crate::SagaManager::with_metrics) and
//! [`OutboxRelay::with_metrics`](crate::OutboxRelay::with_metrics). Whatever is not given one
//! measures nothing and reads nothing more from the store.
//!
//! Label values are bounded: `consumer`, `projection`, `saga` and `relay` are names the
//! application's code chooses; `type` takes the first [`eventfold_core::TYPE_LABELS_MAX`]
//! distinct event types seen, then [`eventfold_core::TYPE_LABEL_OTHER`] (the server's rule,
//! [`eventfold_core::TypeLabels`]); `outcome` is `succeeded` or `failed`.
//!
//! The names are documented with their meaning in `docs/metrics.md`, beside the server's; the
//! Grafana dashboard `docs/grafana/eventfold.json` queries them.

use std::sync::Arc;
use std::time::Duration;

use eventfold_core::{Position, TypeLabels};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::handler::{Handled, HandledOutcome, HandlerObserver};

/// How often a started [`ProjectionProcessor`](crate::ProjectionProcessor) with metrics
/// measures its lag while it waits (it also measures after each batch): often enough for a
/// scrape interval of 15 s, rare enough that the read of the store's head costs nothing.
pub const LAG_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// The `consumer` and `type` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerTypeLabels {
    consumer: String,
    r#type: String,
}

/// The `consumer` and `outcome` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerOutcomeLabels {
    consumer: String,
    outcome: &'static str,
}

/// The `consumer` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabel {
    consumer: String,
}

/// The `projection` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabel {
    projection: String,
}

/// The `saga` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SagaLabel {
    saga: String,
}

/// The `relay` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RelayLabel {
    relay: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn processing_histogram() -> Histogram {
    // 0.1 ms .. ~13 s: an in-memory handler takes well under a millisecond, a handler that
    // calls a service tens of milliseconds; the top buckets hold retries with their delays.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

#[derive(Debug)]
struct Families {
    types: TypeLabels,
    processed: Family<ConsumerTypeLabels, Counter>,
    failed: Family<ConsumerTypeLabels, Counter>,
    duration: HistogramFamily<ConsumerOutcomeLabels>,
    retries: Family<ConsumerLabel, Counter>,
    projection_lag: Family<ProjectionLabel, Gauge>,
    saga_timeouts_fired: Family<SagaLabel, Counter>,
    saga_timeouts_pending: Family<SagaLabel, Gauge>,
    outbox_published: Family<RelayLabel, Counter>,
    outbox_failures: Family<RelayLabel, Counter>,
    outbox_lag: Family<RelayLabel, Gauge>,
}

/// The framework's metric families, registered in the application's registry; cheap to clone
/// (every clone counts into the same families). See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct FrameworkMetrics(Arc<Families>);

impl FrameworkMetrics {
    /// Registers every family in `registry` (each is exposed once its first label exists).
    pub fn new(registry: &mut Registry) -> Self {
        let f = Families {
            types: TypeLabels::new(),
            processed: Family::default(),
            failed: Family::default(),
            duration: Family::new_with_constructor(processing_histogram),
            retries: Family::default(),
            projection_lag: Family::default(),
            saga_timeouts_fired: Family::default(),
            saga_timeouts_pending: Family::default(),
            outbox_published: Family::default(),
            outbox_failures: Family::default(),
            outbox_lag: Family::default(),
        };
        let max = eventfold_core::TYPE_LABELS_MAX;
        let other = eventfold_core::TYPE_LABEL_OTHER;
        registry.register(
            "eventfold_consumer_events_processed",
            format!("Events a handler, projection or saga processed successfully, by consumer name and event type (the first {max} types, then {other})"),
            f.processed.clone(),
        );
        registry.register(
            "eventfold_consumer_events_failed",
            format!("Events a handler gave up on (dead-lettered, nacked, left to the broker), a projection failed to decode or apply, or a saga failed on, by consumer name and event type (the first {max} types, then {other})"),
            f.failed.clone(),
        );
        registry.register(
            "eventfold_consumer_processing_duration_seconds",
            "Time a consumer took on one event (a handler: from its first attempt to its outcome, retry delays included; a saga: one step with its stored state and commands) or on one batch (a projection: applying it with its checkpoint), in seconds, by consumer name and outcome",
            f.duration.clone(),
        );
        registry.register(
            "eventfold_consumer_retries",
            "Attempts a handler made after the first on one event (in-process retries, or redeliveries by the server's consumer group or the broker), by consumer name",
            f.retries.clone(),
        );
        registry.register(
            "eventfold_projection_lag",
            "$all positions between a projection's checkpoint and the newest event it reads (exact when it reads every event in between, an upper bound otherwise; 0 when caught up)",
            f.projection_lag.clone(),
        );
        registry.register(
            "eventfold_saga_timeouts_fired",
            "Saga timeouts that fell due and were handed to the saga",
            f.saga_timeouts_fired.clone(),
        );
        registry.register(
            "eventfold_saga_timeouts_pending",
            "Saga timeouts scheduled and not yet fired or cancelled",
            f.saga_timeouts_pending.clone(),
        );
        registry.register(
            "eventfold_outbox_events_published",
            "Events an outbox relay's sink confirmed (published again after a restart included)",
            f.outbox_published.clone(),
        );
        registry.register(
            "eventfold_outbox_publish_failures",
            "Failed attempts of an outbox relay's sink to publish a batch",
            f.outbox_failures.clone(),
        );
        registry.register(
            "eventfold_outbox_lag",
            "$all positions between an outbox relay's checkpoint and the newest event it publishes (0 when everything is published)",
            f.outbox_lag.clone(),
        );
        FrameworkMetrics(Arc::new(f))
    }

    /// Counts `event_types` processed (or failed) by `consumer`.
    pub(crate) fn count<'a>(
        &self,
        consumer: &str,
        failed: bool,
        event_types: impl IntoIterator<Item = &'a str>,
    ) {
        let family = if failed {
            &self.0.failed
        } else {
            &self.0.processed
        };
        for r#type in self.0.types.labels(event_types) {
            family
                .get_or_create(&ConsumerTypeLabels {
                    consumer: consumer.to_owned(),
                    r#type,
                })
                .inc();
        }
    }

    /// Observes `duration` of `consumer`'s work on one event or batch.
    pub(crate) fn observe(&self, consumer: &str, failed: bool, duration: Duration) {
        self.0
            .duration
            .get_or_create(&ConsumerOutcomeLabels {
                consumer: consumer.to_owned(),
                outcome: if failed { "failed" } else { "succeeded" },
            })
            .observe(duration.as_secs_f64());
    }

    /// Sets the lag of `projection`: from its `position` to `head`.
    pub(crate) fn projection_lag(
        &self,
        projection: &str,
        head: Option<Position>,
        position: Option<Position>,
    ) {
        self.0
            .projection_lag
            .get_or_create(&ProjectionLabel {
                projection: projection.to_owned(),
            })
            .set(gauge_value(lag_events(head, position)));
    }

    /// Counts a timeout of `saga` fired.
    pub(crate) fn saga_timeout_fired(&self, saga: &str) {
        self.0
            .saga_timeouts_fired
            .get_or_create(&SagaLabel {
                saga: saga.to_owned(),
            })
            .inc();
    }

    /// Sets the pending timeouts of `saga`.
    pub(crate) fn saga_timeouts_pending(&self, saga: &str, pending: usize) {
        self.0
            .saga_timeouts_pending
            .get_or_create(&SagaLabel {
                saga: saga.to_owned(),
            })
            .set(gauge_value(pending as u64));
    }

    /// Counts `events` published by the outbox relay `relay`.
    pub(crate) fn outbox_published(&self, relay: &str, events: usize) {
        self.0
            .outbox_published
            .get_or_create(&RelayLabel {
                relay: relay.to_owned(),
            })
            .inc_by(events as u64);
    }

    /// Counts a failed publish attempt of the outbox relay `relay`.
    pub(crate) fn outbox_failure(&self, relay: &str) {
        self.0
            .outbox_failures
            .get_or_create(&RelayLabel {
                relay: relay.to_owned(),
            })
            .inc();
    }

    /// Sets the lag of the outbox relay `relay`: from its checkpoint `position` to `head`.
    pub(crate) fn outbox_lag(
        &self,
        relay: &str,
        head: Option<Position>,
        position: Option<Position>,
    ) {
        self.0
            .outbox_lag
            .get_or_create(&RelayLabel {
                relay: relay.to_owned(),
            })
            .set(gauge_value(lag_events(head, position)));
    }
}

impl HandlerObserver for FrameworkMetrics {
    fn handled(&self, h: &Handled<'_>) {
        let failed = h.outcome == HandledOutcome::Failed;
        self.count(h.handler, failed, [h.event_type]);
        self.observe(h.handler, failed, h.duration);
        if h.retries > 0 {
            self.0
                .retries
                .get_or_create(&ConsumerLabel {
                    consumer: h.handler.to_owned(),
                })
                .inc_by(u64::from(h.retries));
        }
    }
}

/// `$all` positions from `position` (the last one done, `None` before any) to `head` (the
/// newest one to do, `None` when there is none): 0 when caught up.
pub(crate) fn lag_events(head: Option<Position>, position: Option<Position>) -> u64 {
    match (head, position) {
        (None, _) => 0,
        (Some(h), None) => h.0.saturating_add(1),
        (Some(h), Some(p)) => h.0.saturating_sub(p.0),
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
