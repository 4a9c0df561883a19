//! The outbox relay on the embedded engine: an in-process channel sink and an HTTP webhook
//! against a real local server that fails the first requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use eventfold::core::{
    ContentType, EventFilter, EventId, EventStore, EventType, ExpectedRevision, NewEvent, Position,
    StoreError, StreamName,
};
use eventfold::outbox::WebhookFormat;
use eventfold::{
    ChannelSink, CheckpointStore, InMemoryCheckpoints, OutboxRelay, RelayError, RelayOptions,
    RetryPolicy, WebhookSink,
};
use tokio::sync::mpsc;

use crate::support::{memory_store, sample, wait_for_sample};

/// Appends `n` events round-robin to `streams`, one append each; their ids in order.
async fn append(store: &dyn EventStore, streams: &[&str], n: usize, from: usize) -> Vec<EventId> {
    let mut ids = Vec::new();
    for i in from..from + n {
        let stream = StreamName::new(streams[i % streams.len()]).unwrap();
        // Raw JSON text, keys not in sorted order: it must go out as stored.
        let event = NewEvent::bytes(
            EventType::new("thing.happened").unwrap(),
            ContentType::json(),
            format!(r#"{{"z":{i},"a":"keep this key order"}}"#).into_bytes(),
        );
        ids.push(event.id);
        store
            .append(&stream, ExpectedRevision::Any, vec![event])
            .await
            .unwrap();
    }
    ids
}

fn fast(policy: RetryPolicy) -> RetryPolicy {
    policy
        .initial_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(10))
}

async fn wait_for_checkpoint(checkpoints: &InMemoryCheckpoints, name: &str, at: Position) {
    for _ in 0..1000 {
        if checkpoints.load(name).await.unwrap() == Some(at) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("checkpoint {name} never reached {at:?}");
}

#[tokio::test]
async fn the_channel_sink_gets_every_matching_event_in_order_and_the_checkpoint_follows() {
    let store = memory_store();
    let ids = append(&*store, &["order-1", "order-2", "audit-1"], 60, 0).await;
    let checkpoints = InMemoryCheckpoints::new();
    // A small channel: the relay waits for the reader (back-pressure), nothing is lost.
    let (sink, mut rx) = ChannelSink::new(4);
    let relay = OutboxRelay::new("orders", store.clone(), Arc::new(checkpoints.clone()), sink)
        .with_options(
            RelayOptions::default()
                .batch_events_max(7)
                .filter(EventFilter {
                    stream_prefix: Some("order-".into()),
                    ..EventFilter::default()
                }),
        );
    let task = tokio::spawn(relay.run());

    let expected: Vec<EventId> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 2)
        .map(|(_, id)| *id)
        .collect();
    let mut got = Vec::new();
    let mut last = None;
    while got.len() < expected.len() {
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within 10 s")
            .unwrap();
        assert!(e.stream.as_str().starts_with("order-"));
        assert!(last < Some(e.position), "in $all order");
        last = Some(e.position);
        got.push(e.id);
    }
    assert_eq!(got, expected);
    wait_for_checkpoint(&checkpoints, "outbox-orders", last.unwrap()).await;

    // Live events after catch-up.
    let more = append(&*store, &["order-3"], 3, 60).await;
    for id in more {
        assert_eq!(rx.recv().await.unwrap().id, id);
    }
    task.abort();
}

/// What the test webhook saw: each request's status, body and the relay's checkpoint when the
/// request arrived.
#[derive(Debug)]
struct Seen {
    ok: bool,
    raw: String,
    body: serde_json::Value,
    first_position: u64,
    checkpoint_at_arrival: Option<Position>,
}

#[derive(Clone)]
struct Hook {
    fail_first: Arc<AtomicUsize>,
    seen: mpsc::Sender<Seen>,
    checkpoints: InMemoryCheckpoints,
}

async fn hook(State(h): State<Hook>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let ok = h
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_err();
    let first_position = headers["x-eventfold-first-position"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let seen = Seen {
        ok,
        raw: String::from_utf8(body.to_vec()).unwrap(),
        body: serde_json::from_slice(&body).unwrap(),
        first_position,
        checkpoint_at_arrival: h.checkpoints.load("outbox-hook").await.unwrap(),
    };
    h.seen.send(seen).await.unwrap();
    if ok {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// A webhook server on 127.0.0.1 failing its first `fail_first` requests; its URL and what it
/// saw.
async fn serve_hook(
    fail_first: usize,
    checkpoints: InMemoryCheckpoints,
) -> (String, mpsc::Receiver<Seen>) {
    let (tx, rx) = mpsc::channel(256);
    let state = Hook {
        fail_first: Arc::new(AtomicUsize::new(fail_first)),
        seen: tx,
        checkpoints,
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn next_seen(rx: &mut mpsc::Receiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a webhook request within 10 s")
        .unwrap()
}

fn ids_of(body: &serde_json::Value) -> Vec<String> {
    body.as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_webhook_gets_everything_in_order_despite_failures_and_a_restart_resumes() {
    let store = memory_store();
    let ids = append(&*store, &["a-1", "b-1"], 25, 0).await;
    let checkpoints = InMemoryCheckpoints::new();
    let (url, mut seen) = serve_hook(3, checkpoints.clone()).await;
    let start = |url: &str| {
        let sink = WebhookSink::builder(url)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let relay = OutboxRelay::new("hook", store.clone(), Arc::new(checkpoints.clone()), sink)
            .with_options(
                RelayOptions::default()
                    .batch_events_max(10)
                    .sink_retry(fast(RetryPolicy::forever())),
            );
        tokio::spawn(relay.run())
    };
    let task = start(&url);

    let mut delivered: Vec<String> = Vec::new();
    let mut last_position = 0;
    let mut failures = 0;
    while delivered.len() < ids.len() {
        let s = next_seen(&mut seen).await;
        // The checkpoint never runs ahead of what the webhook confirmed.
        let confirmed_through = s.checkpoint_at_arrival.map(|p| p.0 + 1).unwrap_or(0);
        assert!(confirmed_through <= s.first_position, "{s:?}");
        if !s.ok {
            failures += 1;
            continue;
        }
        let batch = ids_of(&s.body);
        last_position = s.body.as_array().unwrap().last().unwrap()["position"]
            .as_u64()
            .unwrap();
        // At least once: a redelivered prefix is allowed, a gap or reordering is not.
        let overlap = delivered.len().saturating_sub(batch.len());
        let start_at = (overlap..=delivered.len())
            .find(|&k| delivered[k..] == batch[..delivered.len() - k])
            .expect("a batch continues what was delivered");
        delivered.truncate(start_at);
        delivered.extend(batch);
    }
    assert_eq!(failures, 3);
    let want: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    assert_eq!(delivered, want);
    wait_for_checkpoint(&checkpoints, "outbox-hook", Position(last_position)).await;
    task.abort();
    let _ = task.await;

    // A restart continues after the checkpoint: only the new events are posted.
    let more = append(&*store, &["a-1"], 4, 25).await;
    let task = start(&url);
    let mut after_restart = Vec::new();
    while after_restart.len() < more.len() {
        let s = next_seen(&mut seen).await;
        assert!(s.ok);
        after_restart.extend(ids_of(&s.body));
    }
    let want: Vec<String> = more.iter().map(|i| i.to_string()).collect();
    assert_eq!(after_restart, want);
    task.abort();
}

#[tokio::test]
async fn cloudevents_batches_carry_the_data_as_stored() {
    let store = memory_store();
    let ids = append(&*store, &["c-1"], 2, 0).await;
    let checkpoints = InMemoryCheckpoints::new();
    let (url, mut seen) = serve_hook(0, checkpoints.clone()).await;
    let sink = WebhookSink::builder(url)
        .format(WebhookFormat::CloudEvents)
        .source("urn:test")
        .build()
        .unwrap();
    let relay = OutboxRelay::new("ce", store.clone(), Arc::new(checkpoints), sink);
    let task = tokio::spawn(relay.run());
    let s = next_seen(&mut seen).await;
    let events = s.body.as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["specversion"], "1.0");
    assert_eq!(events[0]["id"], ids[0].to_string());
    assert_eq!(events[0]["source"], "urn:test");
    assert_eq!(events[0]["type"], "thing.happened");
    assert_eq!(events[0]["subject"], "c-1");
    assert_eq!(events[1]["data"]["z"], 1);
    assert!(
        s.raw
            .contains(r#""data":{"z":1,"a":"keep this key order"}"#),
        "{}",
        s.raw
    );
    task.abort();
}

#[tokio::test]
async fn a_sink_that_keeps_failing_stops_the_relay_after_the_attempts_without_a_checkpoint() {
    let store = memory_store();
    append(&*store, &["d-1"], 3, 0).await;
    let checkpoints = InMemoryCheckpoints::new();
    let (url, _seen) = serve_hook(usize::MAX, checkpoints.clone()).await;
    let sink = WebhookSink::builder(url).build().unwrap();
    let relay = OutboxRelay::new("hook", store.clone(), Arc::new(checkpoints.clone()), sink)
        .with_options(RelayOptions::default().sink_retry(fast(RetryPolicy::new(3))));
    let err = tokio::time::timeout(Duration::from_secs(10), relay.run())
        .await
        .expect("the relay gives up within 10 s");
    let Err(err) = err;
    match &err {
        RelayError::SinkFailed { attempts, .. } => assert_eq!(*attempts, 3),
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(checkpoints.load("outbox-hook").await.unwrap(), None);
}

/// Checkpoints whose `save` fails with `error` the first `failures` times.
struct FailingSaves {
    inner: InMemoryCheckpoints,
    failures: AtomicUsize,
    error: fn() -> StoreError,
}

#[async_trait::async_trait]
impl CheckpointStore for FailingSaves {
    async fn load(&self, name: &str) -> Result<Option<Position>, StoreError> {
        self.inner.load(name).await
    }

    async fn save(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err((self.error)());
        }
        self.inner.save(name, position).await
    }

    async fn reset(&self, name: &str) -> Result<(), StoreError> {
        self.inner.reset(name).await
    }
}

#[tokio::test]
async fn a_transient_store_error_is_retried_from_the_checkpoint_and_any_other_stops_the_relay() {
    let store = memory_store();
    let ids = append(&*store, &["t-1"], 3, 0).await;
    let start = |error: fn() -> StoreError| {
        let checkpoints = Arc::new(FailingSaves {
            inner: InMemoryCheckpoints::new(),
            failures: AtomicUsize::new(2),
            error,
        });
        let (sink, rx) = ChannelSink::new(100);
        let relay = OutboxRelay::new("t", store.clone(), checkpoints.clone(), sink)
            .with_options(RelayOptions::default().store_retry(fast(RetryPolicy::forever())));
        (checkpoints, rx, tokio::spawn(relay.run()))
    };

    // An I/O error: the relay starts over from its checkpoint (publishing the batch again, at
    // least once) until the save goes through.
    let io = || StoreError::io("writing the checkpoint", std::io::Error::other("disk busy"));
    let (checkpoints, mut rx, task) = start(io);
    let mut published = Vec::new();
    let mut last = None;
    while published.len() < 9 {
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the relay retries within 10 s")
            .unwrap();
        published.push(e.id);
        last = Some(e.position);
    }
    assert_eq!(published, [ids.clone(), ids.clone(), ids.clone()].concat());
    wait_for_checkpoint(&checkpoints.inner, "outbox-t", last.unwrap()).await;
    task.abort();

    // A closed store does not come back: the relay stops with the error.
    let (_, _rx, task) = start(|| StoreError::Closed);
    let Err(err) = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the relay stops within 10 s")
        .unwrap();
    assert!(
        matches!(
            &err,
            RelayError::Store {
                source: StoreError::Closed,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_webhook_url_must_be_http() {
    let err = WebhookSink::builder("ftp://example.invalid/x")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("http"), "{err}");
    assert!(WebhookSink::builder("not a url").build().is_err());
}

/// A channel sink whose first publish fails.
struct FailsOnce {
    inner: ChannelSink,
    failed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl eventfold::Sink for FailsOnce {
    async fn publish(
        &self,
        batch: &[eventfold::core::RecordedEvent],
    ) -> Result<(), eventfold::BoxError> {
        if !self.failed.swap(true, Ordering::SeqCst) {
            return Err("the bus is not there yet".into());
        }
        self.inner.publish(batch).await
    }
}

#[tokio::test]
async fn the_outbox_metrics_count_published_events_and_failures_and_the_lag_falls_to_zero() {
    let store = memory_store();
    append(&*store, &["order-1"], 5, 0).await;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = eventfold::FrameworkMetrics::new(&mut registry);
    let (inner, mut rx) = ChannelSink::new(16);
    let sink = FailsOnce {
        inner,
        failed: Default::default(),
    };
    let relay = OutboxRelay::new("orders", store, Arc::new(InMemoryCheckpoints::new()), sink)
        .with_options(RelayOptions::default().sink_retry(fast(RetryPolicy::forever())))
        .with_metrics(metrics);
    let task = tokio::spawn(relay.run());
    for _ in 0..5 {
        rx.recv().await.expect("an event");
    }
    wait_for_sample(
        &registry,
        "eventfold_outbox_events_published_total{relay=\"orders\"}",
        5.0,
    )
    .await;
    let text = wait_for_sample(&registry, "eventfold_outbox_lag{relay=\"orders\"}", 0.0).await;
    assert_eq!(
        sample(
            &text,
            "eventfold_outbox_publish_failures_total{relay=\"orders\"}"
        ),
        Some(1.0),
        "{text}"
    );
    task.abort();
}
