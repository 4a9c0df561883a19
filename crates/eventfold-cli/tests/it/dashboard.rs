//! The Grafana dashboard `docs/grafana/eventfold.json` queries only metrics that are exposed:
//! by a running `eventfold serve` after some traffic, by a running `eventfold relay --metrics`,
//! and by the framework's [`FrameworkMetrics`] after a handler, a projection, a saga and an
//! outbox relay ran (against that server). The relay publishes to Redis: without it the
//! `eventfold_relay_*` names are left unchecked (the rest still are), and under
//! `EVENTFOLD_REQUIRE_SERVICES=1` a missing Redis fails the test.
//!
//! "Exposed" means at least one sample line of that exact name in the OpenMetrics text, not
//! only a `# TYPE` line (prometheus-client prints a labelled family's `# TYPE` and `# HELP`
//! before it has any series, and a panel on such a family would stay empty). Sample names carry
//! their suffixes (`_total`, `_bucket`, `_sum`, `_count`), as Prometheus stores them and as the
//! dashboard must query them, so names are compared exactly.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventfold::core::{EventStore, RecordedEvent};
use eventfold::testing::append_events;
use eventfold::{
    BoxError, ChannelSink, CommandSender, DomainEvent, Effects, Envelope, EventHandler,
    FrameworkMetrics, HandlerRunner, InMemoryCheckpoints, InMemoryReadModel, ManualClock,
    MemoryProjection, OutboxRelay, Projection, ProjectionProcessor, RelayOptions, RetryPolicy,
    Saga, SagaCommand, SagaManager, SendError, Sink,
};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::groups::{append, ids, pull_n};
use crate::relay::{REDIS, RedisKeys, RelayProc, broker, unique};
use crate::server::{Server, client, send};

/// The dashboard, from the repository's root.
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/grafana/eventfold.json"
);

/// PromQL words that are not metric names.
const KEYWORDS: [&str; 8] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "group_left",
    "group_right",
    "inf",
];
/// Words followed by a list of label names in parentheses.
const LABEL_LISTS: [&str; 4] = ["by", "without", "on", "ignoring"];

/// The metric names a PromQL expression reads: its identifiers, without function names,
/// aggregation label lists, label matchers (`{…}`), ranges (`[…]`), strings, numbers,
/// keywords and `$variables`.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    // Skips from an opening `open` to after its matching `close`.
    let skip = |mut i: usize, open: char, close: char| {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                '"' | '\'' | '`' => {
                    let q = chars[i];
                    i += 1;
                    while i < chars.len() && chars[i] != q {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => i = skip(i, '{', '}'),
            '[' => i = skip(i, '[', ']'),
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '$' | '0'..='9' | '.' => {
                // A variable or a number (with its exponent or unit letters).
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_.".contains(chars[i])) {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i]))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let called = chars.get(next) == Some(&'(');
                // `sum by (…) (…)`: an aggregation with its label list before its argument.
                let rest: String = chars[next..].iter().collect();
                let aggregation = ["by", "without"].iter().any(|k| {
                    rest.strip_prefix(k)
                        .is_some_and(|r| r.trim_start().starts_with('('))
                });
                if aggregation {
                    continue;
                }
                if LABEL_LISTS.contains(&word.as_str()) {
                    if called {
                        i = skip(next, '(', ')');
                    }
                } else if !called && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every `expr` of every panel (and of panels nested in rows).
fn exprs(dashboard: &Value) -> Vec<String> {
    fn walk(panels: &Value, out: &mut Vec<String>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push(e.to_owned());
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The names of the samples in an OpenMetrics text.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn metric_names_leaves_out_functions_labels_ranges_and_numbers() {
    let check = |expr: &str, expected: &[&str]| assert_eq!(metric_names(expr), expected, "{expr}");
    check(
        "histogram_quantile(0.99, sum by (le, group) (rate(eventfold_x_seconds_bucket{group=~\"a|b\", type!=\"rate(x)\"}[$__rate_interval])))",
        &["eventfold_x_seconds_bucket"],
    );
    check("eventfold_lag", &["eventfold_lag"]);
    check(
        "sum without (instance) (a_total) / on (group) group_left b offset 5m > bool 1e3",
        &["a_total", "b"],
    );
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_on_a_prometheus_data_source_variable() {
    let d: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("the dashboard"))
            .expect("the dashboard is JSON");
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 30),
        "{}",
        d["schemaVersion"]
    );
    assert_eq!(d["uid"], "eventfold");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource"
            && v["query"] == "prometheus"
            && v["name"] == "datasource"),
        "{vars:?}"
    );
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(p["id"].as_u64().expect("a panel id")),
            "duplicate id: {p}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            let expr = t["expr"].as_str().expect("an expr");
            assert!(!metric_names(expr).is_empty(), "no metric in {expr}");
        }
    }
}

// A small domain for the framework's consumers.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Opened {
    id: String,
}

#[derive(Clone, Debug, PartialEq, DomainEvent)]
#[event(prefix = "dash.")]
enum DashEvent {
    Opened(Opened),
}

/// Fails the first attempt at every event (a retry), and every attempt at id `poison`.
#[derive(Default)]
struct Flaky {
    tried: parking_lot::Mutex<BTreeSet<String>>,
}

#[async_trait::async_trait]
impl EventHandler<DashEvent> for Flaky {
    fn name(&self) -> &str {
        "dash-handler"
    }

    async fn handle(&self, envelope: &Envelope<DashEvent>) -> Result<(), BoxError> {
        let DashEvent::Opened(o) = &envelope.event;
        if o.id == "poison" || self.tried.lock().insert(o.id.clone()) {
            return Err("not this time".into());
        }
        Ok(())
    }
}

struct Count;

impl Projection for Count {
    type Event = DashEvent;
    fn name(&self) -> &str {
        "dash-count"
    }
}

impl MemoryProjection for Count {
    type State = u64;
    fn apply(&self, n: &mut u64, events: &[Envelope<DashEvent>]) -> Result<(), BoxError> {
        *n += events.len() as u64;
        Ok(())
    }
}

/// Schedules a timeout per instance; completes when it fires.
struct Expiry;

impl Saga for Expiry {
    const NAME: &'static str = "dash_expiry";
    type Event = DashEvent;
    type State = bool;
    type Command = String;

    fn instance_id(&self, event: &Envelope<DashEvent>) -> Option<String> {
        let DashEvent::Opened(o) = &event.event;
        Some(o.id.clone())
    }

    fn react(&self, opened: &mut bool, _: &Envelope<DashEvent>, fx: &mut Effects<String>) {
        if !*opened {
            *opened = true;
            fx.schedule("expire", Duration::from_secs(60));
        }
    }

    fn on_timeout(&self, _: &mut bool, _: &str, fx: &mut Effects<String>) {
        fx.complete();
    }
}

struct NoCommands;

#[async_trait::async_trait]
impl CommandSender<String> for NoCommands {
    async fn send(&self, _: &SagaCommand<String>) -> Result<(), SendError> {
        Ok(())
    }
}

/// A channel sink whose first publish fails.
struct FailsOnce(ChannelSink, AtomicBool);

#[async_trait::async_trait]
impl Sink for FailsOnce {
    async fn publish(&self, batch: &[RecordedEvent]) -> Result<(), BoxError> {
        if !self.1.swap(true, Ordering::SeqCst) {
            return Err("not yet".into());
        }
        self.0.publish(batch).await
    }
}

fn fast(policy: RetryPolicy) -> RetryPolicy {
    policy
        .initial_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
}

/// Polls `registry` (up to 30 s) until every series in `wanted` has a sample; its text.
async fn framework_text(registry: &Registry, wanted: &[&str]) -> String {
    for _ in 0..3000 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encodable");
        if wanted
            .iter()
            .all(|w| text.lines().any(|l| l.starts_with(w)))
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the framework's metrics never showed all of {wanted:?}");
}

/// Runs a handler, a projection, a saga (its timeout fired) and an outbox relay over `store`,
/// counting into one registry; its text once each has reported.
async fn run_the_framework(store: Arc<dyn EventStore>) -> String {
    let ids = ["a", "b", "poison"];
    let mut last = None;
    for id in ids {
        let opened = DashEvent::Opened(Opened { id: id.into() });
        last = Some(
            append_events(&*store, &format!("dash-{id}"), [opened])
                .await
                .expect("append"),
        );
    }
    let last = last.expect("appended");
    let mut registry = Registry::default();
    let metrics = FrameworkMetrics::new(&mut registry);

    let mut handler = HandlerRunner::new(
        store.clone(),
        Arc::new(InMemoryCheckpoints::new()),
        Flaky::default(),
    )
    .retry(fast(RetryPolicy::new(2)))
    .observer(Arc::new(metrics.clone()))
    .spawn();
    handler
        .wait_for_checkpoint(last)
        .await
        .expect("the handler ran");
    handler.stop().await.expect("the handler stops");

    ProjectionProcessor::new(store.clone(), InMemoryReadModel::new(Count))
        .metrics(metrics.clone())
        .catch_up(|_| {})
        .await
        .expect("the projection caught up");

    let clock = ManualClock::starting_now();
    let saga = SagaManager::new(Expiry, store.clone(), NoCommands)
        .with_checkpoints(Arc::new(InMemoryCheckpoints::new()))
        .with_clock(Arc::new(clock.clone()))
        .with_metrics(metrics.clone());
    let saga = tokio::spawn(saga.run());
    framework_text(
        &registry,
        &["eventfold_saga_timeouts_pending{saga=\"dash_expiry\"} 3"],
    )
    .await;
    clock.advance(Duration::from_secs(61));

    let (sink, mut rx) = ChannelSink::new(64);
    let outbox = OutboxRelay::new(
        "dash",
        store,
        Arc::new(InMemoryCheckpoints::new()),
        FailsOnce(sink, AtomicBool::new(false)),
    )
    .with_options(RelayOptions::default().sink_retry(fast(RetryPolicy::forever())))
    .with_metrics(metrics);
    let outbox = tokio::spawn(outbox.run());
    rx.recv().await.expect("the outbox published");

    let text = framework_text(
        &registry,
        &[
            "eventfold_saga_timeouts_fired_total{saga=\"dash_expiry\"} 3",
            "eventfold_outbox_events_published_total",
            "eventfold_outbox_lag",
        ],
    )
    .await;
    saga.abort();
    outbox.abort();
    text
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exposed() {
    // The broker relay needs a broker: without Redis its names are not checked (a failure
    // under EVENTFOLD_REQUIRE_SERVICES=1 instead).
    let redis = broker(REDIS).await.is_some();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("the dashboard"))
            .expect("the dashboard is JSON");
    let queried: BTreeSet<String> = exprs(&dashboard)
        .iter()
        .flat_map(|e| metric_names(e))
        .collect();
    assert!(queried.len() > 20, "{queried:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--durability", "none"]);
    let (c, u) = (client(), server.url.clone());

    // Server traffic: appends (one refused), a read, a consumer group with an ack and a park.
    append(&c, &u, "dash-1", 3).await;
    let (st, _) = send(
        c.post(format!("{u}/streams/dash-1"))
            .header("Expected-Revision", "no-stream")
            .json(&json!([{"type": "t", "data": 0}])),
    )
    .await;
    assert_eq!(st, 409);
    send(c.get(format!("{u}/streams/dash-1"))).await;
    let (st, body) = send(
        c.put(format!("{u}/subscriptions/dash-group"))
            .json(&json!({"start": "start"})),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let delivered = ids(&pull_n(&c, &u, "dash-group", "c1", 2).await);
    send(
        c.post(format!("{u}/subscriptions/dash-group/ack"))
            .json(&json!({"delivery_ids": [delivered[0]]})),
    )
    .await;
    send(c.post(format!("{u}/subscriptions/dash-group/nack")).json(
        &json!({"delivery_ids": [delivered[1]], "action": "park", "reason": "dashboard test"}),
    ))
    .await;

    // The framework, over the same server.
    let store: Arc<dyn EventStore> =
        Arc::new(eventfold::client::Client::new(&u, None).expect("a client"));
    let framework = run_the_framework(store).await;

    // The broker relay, from the same server.
    let topic = unique("dashboard");
    let _keys = RedisKeys(topic.clone());
    let mut relay_text = String::new();
    if redis {
        let relay = RelayProc::start(&["--to", REDIS, "--topic", &topic, "--server", &u]);
        relay
            .metric_at_least("eventfold_relay_events_published_total", 1)
            .await;
        relay_text = reqwest::get(relay.metrics_url())
            .await
            .expect("GET the relay's /metrics")
            .text()
            .await
            .expect("text");
    }

    let server_text = c
        .get(format!("{u}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");

    let mut exposed = sample_names(&server_text);
    exposed.extend(sample_names(&framework));
    exposed.extend(sample_names(&relay_text));
    let missing: Vec<&String> = queried
        .difference(&exposed)
        .filter(|name| redis || !name.starts_with("eventfold_relay_"))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which nothing exposes.\nserver:\n{server_text}\nframework:\n{framework}\nrelay:\n{relay_text}"
    );
}
