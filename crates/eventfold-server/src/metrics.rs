//! The server's metrics, exposed at `GET /metrics`. Every family is registered at start-up so a
//! scraper sees it before the first event (labelled families once their label exists).
//!
//! Label values are bounded: `type` takes the first [`TYPE_LABELS_MAX`] distinct event types
//! seen, then [`TYPE_LABEL_OTHER`]; `group` takes consumer group names, which only an admin
//! creates (and a deleted group's series go with it); `outcome` is `ack`, `nack` or `timeout`.

use std::collections::BTreeMap;

use eventfold_core::TypeLabels;

use eventfold_groups::{DeliveryEnded, DeliveryOutcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `group` label of consumer-group families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    /// The consumer group.
    pub group: String,
}

pub use eventfold_core::{TYPE_LABEL_OTHER, TYPE_LABELS_MAX};

/// The `type` label: an event type, or [`TYPE_LABEL_OTHER`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct TypeLabel {
    /// The event type.
    pub r#type: String,
}

/// The labels of the processing-time histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessingLabels {
    /// The consumer group.
    pub group: String,
    /// How the delivery ended: `ack`, `nack` or `timeout`.
    pub outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn processing_histogram() -> Histogram {
    // 0.5 ms .. ~65 s: an in-process handler answers in well under a millisecond; the top
    // buckets hold ack timeouts (observed at the timeout).
    Histogram::new(exponential_buckets(0.000_5, 2.0, 18))
}

/// Every metric family of the server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The event types that have their own `type` label (at most [`TYPE_LABELS_MAX`]).
    types: TypeLabels,
    /// Events acknowledged by appends, by `type`.
    pub events_appended: Family<TypeLabel, Counter>,
    /// Time from receiving an append to answering it, in seconds.
    pub append_duration: Histogram,
    /// Events returned by reads and delivered to subscribers.
    pub events_read: Counter,
    /// Open subscriptions (SSE and NDJSON).
    pub subscriptions_active: Gauge,
    /// Events written to subscriptions (SSE and NDJSON): one per event per subscriber.
    pub subscription_deliveries: Counter,
    /// Chunks written to subscriptions: one per wake-up that had events, however many.
    pub subscription_chunks: Counter,
    /// Events serialized for subscriptions; the others were shared from
    /// [`crate::encoded::EncodedEvents`]. Deliveries per encode is the sharing factor.
    pub subscription_encodes: Counter,
    /// Subscriptions that moved from their own store cursor to the live hub
    /// ([`crate::live`]): once at the end of each catch-up.
    pub subscription_hub_joins: Counter,
    /// Subscriptions that fell behind the live hub's ring (or lost it) and went back to their
    /// own store cursor.
    pub subscription_hub_fallbacks: Counter,
    /// Live subscriptions woken by the hub: one per push per subscription that wants one of
    /// the push's events (the others sleep on). Deliveries per wake-up says how many events a
    /// wake-up carried.
    pub subscription_hub_wakeups: Counter,
    /// Events matching a consumer group's filter that are not settled yet (the group's
    /// `lag`, see [`eventfold_groups::GroupInfo::lag`]).
    pub consumer_group_lag: Family<GroupLabel, Gauge>,
    /// Events parked by a consumer group.
    pub events_parked: Family<GroupLabel, Counter>,
    /// Time a consumer held a consumer-group delivery (from the delivery to its ack or nack, or
    /// to its ack timeout), in seconds, by `group` and `outcome`.
    pub event_processing_duration: HistogramFamily<ProcessingLabels>,
    /// Events whose append failed (refused or not written) or that a consumer nacked, by
    /// `type`.
    pub events_failed: Family<TypeLabel, Counter>,
    /// Events a consumer acknowledged in a consumer group, by `type` (the same events as the
    /// groups' `acked`, counted by type rather than by group).
    pub events_processed: Family<TypeLabel, Counter>,
    /// A consumer group's unacknowledged deliveries.
    pub consumer_group_in_flight: Family<GroupLabel, Gauge>,
    /// A consumer group's deliveries (first attempts and retries).
    pub consumer_group_delivered: Family<GroupLabel, Counter>,
    /// A consumer group's acknowledged events.
    pub consumer_group_acked: Family<GroupLabel, Counter>,
    /// A consumer group's failed attempts (nack retry or ack timeout).
    pub consumer_group_retried: Family<GroupLabel, Counter>,
    /// A consumer group's events parked now (parked and not yet replayed).
    pub consumer_group_parked: Family<GroupLabel, Gauge>,
    /// Appends answered as a retry of an earlier append (`idempotent_replay`: nothing written).
    pub idempotent_replays: Counter,
}

/// One consumer group's figures, as its manager counts them.
#[derive(Debug, Clone, Copy)]
pub struct GroupFigures {
    /// Matching events not settled yet ([`eventfold_groups::GroupInfo::lag`]).
    pub lag: u64,
    /// Unacknowledged deliveries.
    pub in_flight: u64,
    /// Deliveries since start-up.
    pub delivered_total: u64,
    /// Acknowledged events since start-up.
    pub acked_total: u64,
    /// Failed attempts since start-up.
    pub retried_total: u64,
    /// Parked events since start-up.
    pub parked_total: u64,
    /// Events parked now (not yet replayed).
    pub parked: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let events_appended = Family::<TypeLabel, Counter>::default();
        // 50 µs .. ~1.6 s: an fdatasync is ~0.2 ms here; a slow disk or a full queue shows up high.
        let append_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let events_read = Counter::default();
        let subscriptions_active = Gauge::default();
        let subscription_deliveries = Counter::default();
        let subscription_chunks = Counter::default();
        let subscription_encodes = Counter::default();
        let subscription_hub_joins = Counter::default();
        let subscription_hub_fallbacks = Counter::default();
        let subscription_hub_wakeups = Counter::default();
        let consumer_group_lag = Family::<GroupLabel, Gauge>::default();
        let events_parked = Family::<GroupLabel, Counter>::default();
        let event_processing_duration: HistogramFamily<ProcessingLabels> =
            Family::new_with_constructor(processing_histogram);
        let events_failed = Family::<TypeLabel, Counter>::default();
        let events_processed = Family::<TypeLabel, Counter>::default();
        let consumer_group_in_flight = Family::<GroupLabel, Gauge>::default();
        let consumer_group_delivered = Family::<GroupLabel, Counter>::default();
        let consumer_group_acked = Family::<GroupLabel, Counter>::default();
        let consumer_group_retried = Family::<GroupLabel, Counter>::default();
        let consumer_group_parked = Family::<GroupLabel, Gauge>::default();
        let idempotent_replays = Counter::default();
        registry.register(
            "eventfold_idempotent_replays",
            "Appends answered as a retry of an earlier append with the same event ids (nothing written)",
            idempotent_replays.clone(),
        );
        registry.register(
            "eventfold_consumer_group_in_flight",
            "Unacknowledged deliveries of a consumer group",
            consumer_group_in_flight.clone(),
        );
        registry.register(
            "eventfold_consumer_group_delivered",
            "Deliveries made by a consumer group",
            consumer_group_delivered.clone(),
        );
        registry.register(
            "eventfold_consumer_group_acked",
            "Events acknowledged in a consumer group",
            consumer_group_acked.clone(),
        );
        registry.register(
            "eventfold_consumer_group_retried",
            "Failed delivery attempts (nack retry or ack timeout) in a consumer group",
            consumer_group_retried.clone(),
        );
        registry.register(
            "eventfold_consumer_group_parked",
            "Events a consumer group holds parked (parked and not yet replayed)",
            consumer_group_parked.clone(),
        );
        registry.register(
            "eventfold_events_appended",
            format!("Events acknowledged by appends, by event type (the first {TYPE_LABELS_MAX} types, then {TYPE_LABEL_OTHER})"),
            events_appended.clone(),
        );
        registry.register(
            "eventfold_append_duration_seconds",
            "Time to answer an append, in seconds",
            append_duration.clone(),
        );
        registry.register(
            "eventfold_events_read",
            "Events returned by reads and delivered to subscribers",
            events_read.clone(),
        );
        registry.register(
            "eventfold_subscriptions_active",
            "Open subscriptions",
            subscriptions_active.clone(),
        );
        registry.register(
            "eventfold_subscription_deliveries",
            "Events written to subscriptions (SSE and NDJSON), one per event per subscriber",
            subscription_deliveries.clone(),
        );
        registry.register(
            "eventfold_subscription_chunks",
            "Body chunks written to subscriptions: one per wake-up that had events",
            subscription_chunks.clone(),
        );
        registry.register(
            "eventfold_subscription_encodes",
            "Events serialized for subscriptions (the rest of the deliveries shared an encoding)",
            subscription_encodes.clone(),
        );
        registry.register(
            "eventfold_subscription_hub_joins",
            "Subscriptions that caught up and moved to the live hub (one reader of the log for all)",
            subscription_hub_joins.clone(),
        );
        registry.register(
            "eventfold_subscription_hub_fallbacks",
            "Subscriptions that fell behind the live hub and went back to reading the store",
            subscription_hub_fallbacks.clone(),
        );
        registry.register(
            "eventfold_subscription_hub_wakeups",
            "Live subscriptions woken by the live hub because a commit held an event they want",
            subscription_hub_wakeups.clone(),
        );
        registry.register(
            "eventfold_consumer_group_lag",
            format!(
                "Events matching a consumer group's filter not yet settled (acked, skipped or parked): read and unsettled plus not yet read, up to the end of the source; a lower bound for a few scrapes after a burst of more than {} events",
                eventfold_groups::LAG_COUNT_MAX
            ),
            consumer_group_lag.clone(),
        );
        registry.register(
            "eventfold_events_parked",
            "Events parked by a consumer group",
            events_parked.clone(),
        );
        registry.register(
            "eventfold_event_processing_duration_seconds",
            "Time a consumer held a consumer-group delivery, from the delivery to its ack or nack (or to its ack timeout), in seconds",
            event_processing_duration.clone(),
        );
        registry.register(
            "eventfold_events_failed",
            format!("Events whose append failed or that a consumer nacked, by event type (the first {TYPE_LABELS_MAX} types, then {TYPE_LABEL_OTHER})"),
            events_failed.clone(),
        );
        registry.register(
            "eventfold_events_processed",
            format!("Events a consumer acknowledged in a consumer group, by event type (the first {TYPE_LABELS_MAX} types, then {TYPE_LABEL_OTHER})"),
            events_processed.clone(),
        );
        Metrics {
            registry,
            types: TypeLabels::new(),
            events_appended,
            append_duration,
            events_read,
            subscriptions_active,
            subscription_deliveries,
            subscription_chunks,
            subscription_encodes,
            subscription_hub_joins,
            subscription_hub_fallbacks,
            subscription_hub_wakeups,
            consumer_group_lag,
            events_parked,
            event_processing_duration,
            events_failed,
            events_processed,
            consumer_group_in_flight,
            consumer_group_delivered,
            consumer_group_acked,
            consumer_group_retried,
            consumer_group_parked,
            idempotent_replays,
        }
    }

    /// How many events of a batch go under each `type` label.
    pub fn type_counts<'a>(
        &self,
        event_types: impl IntoIterator<Item = &'a str>,
    ) -> BTreeMap<TypeLabel, u64> {
        let mut out = BTreeMap::new();
        for r#type in self.types.labels(event_types) {
            *out.entry(TypeLabel { r#type }).or_insert(0) += 1;
        }
        out
    }

    /// Adds `counts` (from [`Metrics::type_counts`]) to `family`.
    pub fn count_by_type(family: &Family<TypeLabel, Counter>, counts: &BTreeMap<TypeLabel, u64>) {
        for (label, n) in counts {
            family.get_or_create(label).inc_by(*n);
        }
    }

    /// Records a consumer-group delivery that ended: its time in the processing histogram, an
    /// acked event in `events_processed` and a nacked one in `events_failed`.
    pub fn delivery_ended(&self, e: &DeliveryEnded<'_>) {
        self.event_processing_duration
            .get_or_create(&ProcessingLabels {
                group: e.group.to_string(),
                outcome: e.outcome.as_str(),
            })
            .observe(e.held.as_secs_f64());
        let family = match e.outcome {
            DeliveryOutcome::Ack => &self.events_processed,
            DeliveryOutcome::Nack => &self.events_failed,
            DeliveryOutcome::Timeout => return,
        };
        let counts = self.type_counts([e.event.event_type.as_str()]);
        Self::count_by_type(family, &counts);
    }

    /// Brings a group's families up to its manager's figures (counters only move forward).
    pub fn observe_group(&self, group: &str, f: GroupFigures) {
        let label = GroupLabel {
            group: group.to_owned(),
        };
        let advance = |c: &Counter, total: u64| {
            let now = c.get();
            if total > now {
                c.inc_by(total - now);
            }
        };
        self.consumer_group_lag
            .get_or_create(&label)
            .set(i64::try_from(f.lag).unwrap_or(i64::MAX));
        self.consumer_group_in_flight
            .get_or_create(&label)
            .set(i64::try_from(f.in_flight).unwrap_or(i64::MAX));
        self.consumer_group_parked
            .get_or_create(&label)
            .set(i64::try_from(f.parked).unwrap_or(i64::MAX));
        advance(
            &self.consumer_group_delivered.get_or_create(&label),
            f.delivered_total,
        );
        advance(
            &self.consumer_group_acked.get_or_create(&label),
            f.acked_total,
        );
        advance(
            &self.consumer_group_retried.get_or_create(&label),
            f.retried_total,
        );
        advance(&self.events_parked.get_or_create(&label), f.parked_total);
    }

    /// Drops a deleted group's labels.
    pub fn forget_group(&self, group: &str) {
        let label = GroupLabel {
            group: group.to_owned(),
        };
        self.consumer_group_lag.remove(&label);
        self.consumer_group_in_flight.remove(&label);
        self.consumer_group_delivered.remove(&label);
        self.consumer_group_acked.remove(&label);
        self.consumer_group_retried.remove(&label);
        self.consumer_group_parked.remove(&label);
        self.events_parked.remove(&label);
        for outcome in [
            DeliveryOutcome::Ack,
            DeliveryOutcome::Nack,
            DeliveryOutcome::Timeout,
        ] {
            self.event_processing_duration.remove(&ProcessingLabels {
                group: group.to_owned(),
                outcome: outcome.as_str(),
            });
        }
    }

    /// The exposition text (OpenMetrics, which Prometheus scrapes natively).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Counts a subscription as active for as long as it lives.
#[derive(Debug)]
pub struct ActiveSubscription(Gauge);

impl ActiveSubscription {
    /// Increments the gauge; the drop decrements it.
    pub fn new(g: &Gauge) -> Self {
        g.inc();
        ActiveSubscription(g.clone())
    }
}

impl Drop for ActiveSubscription {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed_from_start_up() {
        let m = Metrics::new();
        let text = m.render();
        for name in [
            "eventfold_append_duration_seconds_bucket",
            "eventfold_events_read_total",
            "eventfold_subscriptions_active",
            "eventfold_idempotent_replays_total",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        // Labelled families appear once their label exists (the contract allows that).
        m.events_parked
            .get_or_create(&GroupLabel { group: "g1".into() })
            .inc();
        m.consumer_group_lag
            .get_or_create(&GroupLabel { group: "g1".into() })
            .set(7);
        let counts = m.type_counts(["order.placed", "order.placed"]);
        Metrics::count_by_type(&m.events_appended, &counts);
        Metrics::count_by_type(&m.events_failed, &counts);
        let text = m.render();
        assert!(
            text.contains("eventfold_events_parked_total{group=\"g1\"} 1"),
            "{text}"
        );
        for line in [
            "eventfold_events_appended_total{type=\"order.placed\"} 2",
            "eventfold_events_failed_total{type=\"order.placed\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(
            text.contains("eventfold_consumer_group_lag{group=\"g1\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("# HELP eventfold_consumer_group_lag Events matching a consumer group's filter not yet settled"),
            "{text}"
        );
    }

    #[test]
    fn the_parked_gauge_follows_the_groups_figures_and_goes_with_the_group() {
        let m = Metrics::new();
        let figures = |parked, parked_total| GroupFigures {
            lag: 0,
            in_flight: 0,
            delivered_total: 3,
            acked_total: 1,
            retried_total: 0,
            parked_total,
            parked,
        };
        m.observe_group("g1", figures(2, 2));
        let text = m.render();
        assert!(
            text.contains("eventfold_consumer_group_parked{group=\"g1\"} 2"),
            "{text}"
        );
        // A replay lowers the gauge; the parked counter keeps its total.
        m.observe_group("g1", figures(0, 2));
        let text = m.render();
        assert!(
            text.contains("eventfold_consumer_group_parked{group=\"g1\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("eventfold_events_parked_total{group=\"g1\"} 2"),
            "{text}"
        );
        m.forget_group("g1");
        assert!(!m.render().contains("group=\"g1\""));
    }
}
