//! `/metrics` after real requests, in process: the `type` label and its bound, and the time
//! consumers hold consumer-group deliveries.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use eventfold_core::EventStore;
use eventfold_engine::{Engine, EngineOptions};
use eventfold_groups::Groups;
use eventfold_server::metrics::{TYPE_LABEL_OTHER, TYPE_LABELS_MAX};
use eventfold_server::{AppState, ServerLimits};
use serde_json::{Value, json};
use tower::ServiceExt as _;

struct Server {
    app: axum::Router,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn server() -> Server {
    let data = tempfile::tempdir().expect("tempdir");
    let state_dir = tempfile::tempdir().expect("tempdir");
    let engine: Arc<dyn EventStore> =
        Arc::new(Engine::open(data.path(), EngineOptions::for_tests()).expect("engine"));
    let state: Arc<dyn EventStore> =
        Arc::new(Engine::open(state_dir.path(), EngineOptions::for_tests()).expect("engine"));
    let groups = Groups::open(engine.clone(), state).await.expect("groups");
    let app = eventfold_server::router(
        AppState::new(engine, ServerLimits::default()).with_groups(groups),
    );
    Server {
        app,
        _dirs: (data, state_dir),
    }
}

impl Server {
    /// Sends a request; returns the status and the body's text.
    async fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> (u16, String) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).expect("request"))
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Appends one event per type to `stream`; returns the status.
    async fn append(&self, stream: &str, types: &[&str], headers: &[(&str, &str)]) -> u16 {
        let body: Vec<Value> = types
            .iter()
            .map(|t| json!({"type": t, "data": {}}))
            .collect();
        let body = serde_json::to_string(&body).expect("json");
        self.send("POST", &format!("/streams/{stream}"), headers, body)
            .await
            .0
    }

    async fn post_json(&self, uri: &str, body: Value) -> Value {
        let (status, text) = self.send("POST", uri, &[], body.to_string()).await;
        assert_eq!(status, 200, "{uri}: {text}");
        serde_json::from_str(&text).expect("a JSON answer")
    }

    async fn scrape(&self) -> String {
        let (status, text) = self.send("GET", "/metrics", &[], String::new()).await;
        assert_eq!(status, 200, "{text}");
        text
    }
}

/// The value of the sample `name{labels}` in `text`, if it is there.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn appended_and_failed_events_are_counted_by_type() {
    let s = server().await;
    let types = ["order.placed", "order.placed", "order.shipped"];
    assert_eq!(s.append("order-1", &types, &[]).await, 201);
    // A refused append (the stream exists) counts its events as failed, by type.
    let refused = s
        .append(
            "order-1",
            &["order.placed"],
            &[("expected-revision", "no-stream")],
        )
        .await;
    assert_eq!(refused, 409);
    let text = s.scrape().await;
    let appended = |t: &str| {
        sample(
            &text,
            &format!("eventfold_events_appended_total{{type=\"{t}\"}}"),
        )
    };
    assert_eq!(appended("order.placed"), Some(2.0), "{text}");
    assert_eq!(appended("order.shipped"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "eventfold_events_failed_total{type=\"order.placed\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn types_beyond_the_first_ones_are_counted_as_other() {
    let s = server().await;
    let extra = 10;
    let names: Vec<String> = (0..TYPE_LABELS_MAX + extra)
        .map(|i| format!("t{i}"))
        .collect();
    let types: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(s.append("cap-1", &types, &[]).await, 201);
    // A type seen before keeps its own label; a new one goes to `other`.
    assert_eq!(s.append("cap-1", &["t0", "late"], &[]).await, 201);
    let text = s.scrape().await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("eventfold_events_appended_total{"))
        .collect();
    assert_eq!(series.len(), TYPE_LABELS_MAX + 1, "{series:?}");
    assert_eq!(
        sample(&text, "eventfold_events_appended_total{type=\"t0\"}"),
        Some(2.0)
    );
    let last_own = format!(
        "eventfold_events_appended_total{{type=\"t{}\"}}",
        TYPE_LABELS_MAX - 1
    );
    assert_eq!(sample(&text, &last_own), Some(1.0));
    let other = format!("eventfold_events_appended_total{{type=\"{TYPE_LABEL_OTHER}\"}}");
    assert_eq!(sample(&text, &other), Some((extra + 1) as f64), "{text}");
}

#[tokio::test]
async fn the_processing_histogram_and_the_type_counters_observe_acks_and_nacks_per_group() {
    let s = server().await;
    assert_eq!(s.append("order-1", &["order.placed"; 3], &[]).await, 201);
    let (status, text) = s
        .send(
            "PUT",
            "/subscriptions/g1",
            &[],
            json!({"start": "start"}).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let pulled = s
        .post_json(
            "/subscriptions/g1/pull",
            json!({"consumer": "c", "max": 3, "wait_ms": 5000}),
        )
        .await;
    let ids: Vec<String> = pulled["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["delivery_id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "{pulled}");
    // The lag gauge is the group's exact figure: matching events not yet settled.
    let lag = "eventfold_consumer_group_lag{group=\"g1\"}";
    assert_eq!(sample(&s.scrape().await, lag), Some(3.0));
    s.post_json("/subscriptions/g1/ack", json!({"delivery_ids": ids[..2]}))
        .await;
    s.post_json(
        "/subscriptions/g1/nack",
        json!({"delivery_ids": ids[2..], "action": "skip", "reason": "not mine"}),
    )
    .await;
    let text = s.scrape().await;
    let count = |outcome: &str| {
        sample(
            &text,
            &format!(
                "eventfold_event_processing_duration_seconds_count{{group=\"g1\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(count("ack"), Some(2.0), "{text}");
    assert_eq!(count("nack"), Some(1.0), "{text}");
    assert_eq!(sample(&text, lag), Some(0.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "eventfold_events_failed_total{type=\"order.placed\"}"
        ),
        Some(1.0),
        "a nacked event is a failed one: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "eventfold_events_processed_total{type=\"order.placed\"}"
        ),
        Some(2.0),
        "an acked event is a processed one: {text}"
    );
    // A deleted group's series go with it.
    let (status, _) = s
        .send("DELETE", "/subscriptions/g1", &[], String::new())
        .await;
    assert_eq!(status, 204);
    assert!(!s.scrape().await.contains("group=\"g1\""));
}

/// A retry of an earlier append (after another append to its stream) is answered 200 as a
/// replay and counted in `eventfold_idempotent_replays_total`, its events not counted again as
/// appended; an id of it in a new batch is `409 duplicate_event_id` with the stream and id.
#[tokio::test]
async fn idempotent_replays_are_counted_and_duplicate_ids_refused() {
    let s = server().await;
    let id = "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d";
    let batch = json!([{"id": id, "type": "order.placed", "data": {}}]).to_string();
    let (status, text) = s.send("POST", "/streams/order-9", &[], batch.clone()).await;
    assert_eq!(status, 201, "{text}");
    let first: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(s.append("order-9", &["order.paid"], &[]).await, 201);
    let (status, text) = s
        .send(
            "POST",
            "/streams/order-9",
            &[("expected-revision", "no-stream")],
            batch,
        )
        .await;
    assert_eq!(status, 200, "a replay: {text}");
    let again: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(again, first);
    let overlap = json!([
        {"type": "order.placed", "data": {}},
        {"id": id, "type": "order.placed", "data": {}}
    ])
    .to_string();
    let (status, text) = s.send("POST", "/streams/order-10", &[], overlap).await;
    assert_eq!(status, 409, "{text}");
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["error"]["code"], "duplicate_event_id");
    assert_eq!(body["error"]["stream"], "order-10");
    assert_eq!(body["error"]["id"], id);
    let text = s.scrape().await;
    assert_eq!(
        sample(&text, "eventfold_idempotent_replays_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "eventfold_events_appended_total{type=\"order.placed\"}"
        ),
        Some(1.0)
    );
}
