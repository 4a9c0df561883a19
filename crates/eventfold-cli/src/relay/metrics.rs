//! The relay's Prometheus metrics at `--metrics ADDR` (`GET /metrics`, OpenMetrics text as the
//! server's `/metrics`). Every family carries the labels `relay`, `broker` and `topic`, and is
//! registered at start, so a scraper sees each before the first event.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use eventfold_relay::{RelayName, RelayProgress, RelayState};
use eventfold_transport::Topic;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// The values of the `state` label of `eventfold_relay_state`.
const STATES: [&str; 5] = ["starting", "running", "retrying", "stopped", "failed"];

/// The `state` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

fn state_name(s: &RelayState) -> &'static str {
    match s {
        RelayState::Starting => "starting",
        RelayState::Running => "running",
        RelayState::Retrying { .. } => "retrying",
        RelayState::Stopped => "stopped",
        RelayState::Failed(_) => "failed",
    }
}

/// The families, fed from the relay's progress by [`follow`].
#[derive(Clone, Debug)]
pub struct RelayMetrics {
    registry: Arc<Registry>,
    events: Counter,
    batches: Counter,
    broker_errors: Counter,
    retries: Counter,
    checkpoint: Gauge,
    next_position: Gauge,
    lag: Gauge,
    state: Family<StateLabel, Gauge>,
}

impl RelayMetrics {
    /// Registers every family with the labels of this relay.
    pub fn new(name: &RelayName, broker: &'static str, topic: &Topic) -> RelayMetrics {
        let labels = [
            (Cow::Borrowed("relay"), Cow::Owned(name.to_string())),
            (Cow::Borrowed("broker"), Cow::Borrowed(broker)),
            (Cow::Borrowed("topic"), Cow::Owned(topic.to_string())),
        ];
        let mut registry = Registry::with_labels(labels.into_iter());
        let (events, batches, broker_errors, retries) = (
            Counter::default(),
            Counter::default(),
            Counter::default(),
            Counter::default(),
        );
        let (checkpoint, next_position, lag) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        let state = Family::<StateLabel, Gauge>::default();
        registry.register(
            "eventfold_relay_events_published",
            "Events the broker confirmed since the relay started (events published again after a restart included)",
            events.clone(),
        );
        registry.register(
            "eventfold_relay_batches_published",
            "Publishes (batches of events) the broker confirmed since the relay started",
            batches.clone(),
        );
        registry.register(
            "eventfold_relay_broker_errors",
            "Publishes the broker failed or refused, each attempt counted",
            broker_errors.clone(),
        );
        registry.register(
            "eventfold_relay_retries",
            "Backoff delays waited after a broker or store failure",
            retries.clone(),
        );
        registry.register(
            "eventfold_relay_checkpoint_position",
            "The relay's last checkpoint: the next $all position it publishes after a restart (0 before the first)",
            checkpoint.clone(),
        );
        registry.register(
            "eventfold_relay_next_position",
            "The next $all position the relay reads",
            next_position.clone(),
        );
        registry.register(
            "eventfold_relay_lag",
            "$all positions between the next one the relay reads and the log's end (all events, filtered out or not), measured at most every second",
            lag.clone(),
        );
        registry.register(
            "eventfold_relay_state",
            "1 for the relay's current state (starting, running, retrying, stopped, failed), 0 for the others",
            state.clone(),
        );
        for s in STATES {
            state
                .get_or_create(&StateLabel { state: s })
                .set(i64::from(s == "starting"));
        }
        RelayMetrics {
            registry: Arc::new(registry),
            events,
            batches,
            broker_errors,
            retries,
            checkpoint,
            next_position,
            lag,
            state,
        }
    }

    /// Brings the families up to `p` (counters only move forward).
    pub fn observe(&self, p: &RelayProgress) {
        let advance = |c: &Counter, total: u64| {
            let now = c.get();
            if total > now {
                c.inc_by(total - now);
            }
        };
        advance(&self.events, p.published);
        advance(&self.batches, p.batches);
        advance(&self.broker_errors, p.broker_errors);
        advance(&self.retries, p.retries);
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.checkpoint.set(gauge(p.checkpoint.map_or(0, |c| c.0)));
        self.next_position.set(gauge(p.next_position.0));
        self.lag.set(gauge(p.lag.unwrap_or(0)));
        let current = state_name(&p.state);
        for s in STATES {
            self.state
                .get_or_create(&StateLabel { state: s })
                .set(i64::from(s == current));
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the relay's metrics");
        }
        out
    }

    /// Serves `GET /metrics` on `addr` in a task of its own; the address it listens on.
    pub async fn serve(&self, addr: SocketAddr) -> Result<SocketAddr, String> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            format!(
                "cannot listen on {addr} for --metrics: {e} (is something else listening there? \
                 choose another address)"
            )
        })?;
        let local = listener.local_addr().unwrap_or(addr);
        let metrics = self.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let text = metrics.render();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics endpoint stopped");
            }
        });
        Ok(local)
    }
}

/// Feeds `metrics` from `progress` until the relay is gone.
pub async fn follow(mut progress: watch::Receiver<RelayProgress>, metrics: RelayMetrics) {
    loop {
        let p = progress.borrow_and_update().clone();
        metrics.observe(&p);
        if progress.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold_core::Position;

    #[test]
    fn the_families_follow_the_progress() {
        let m = RelayMetrics::new(
            &RelayName::new("r1").unwrap(),
            "redis",
            &Topic::new("events").unwrap(),
        );
        let text = m.render();
        let labels = "broker=\"redis\",relay=\"r1\",topic=\"events\"";
        assert!(
            text.contains("eventfold_relay_events_published_total{")
                && text.contains("relay=\"r1\""),
            "{text}"
        );
        let p = RelayProgress {
            state: RelayState::Retrying {
                attempts: 1,
                error: "down".into(),
            },
            published: 42,
            batches: 3,
            broker_errors: 2,
            retries: 2,
            next_position: Position(50),
            checkpoint: Some(Position(45)),
            lag: Some(9),
        };
        m.observe(&p);
        m.observe(&p);
        let text = m.render();
        for (family, value) in [
            ("eventfold_relay_events_published_total", "42"),
            ("eventfold_relay_batches_published_total", "3"),
            ("eventfold_relay_broker_errors_total", "2"),
            ("eventfold_relay_retries_total", "2"),
            ("eventfold_relay_checkpoint_position", "45"),
            ("eventfold_relay_next_position", "50"),
            ("eventfold_relay_lag", "9"),
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{family}{{")))
                .unwrap_or_else(|| panic!("{family} missing from:\n{text}"));
            assert!(line.ends_with(&format!(" {value}")), "{line}");
            for label in labels.split(',') {
                assert!(line.contains(label), "{line}");
            }
        }
        let state = |s: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("eventfold_relay_state{") && l.contains(&format!("state=\"{s}\""))
                })
                .unwrap_or_else(|| panic!("state {s} missing from:\n{text}"))
                .ends_with(" 1")
        };
        assert!(state("retrying"));
        assert!(!state("running") && !state("starting"));
    }
}
