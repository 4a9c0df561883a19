//! Type patterns over HTTP, in process: `type=order.*` on `GET /all`, a malformed pattern's
//! `400`, and a consumer group whose filter is a pattern.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use eventfold_core::EventStore;
use eventfold_engine::{Engine, EngineOptions};
use eventfold_groups::Groups;
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
    async fn send(&self, method: &str, uri: &str, accept: &str, body: String) -> (u16, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .header("accept", accept)
            .body(Body::from(body))
            .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The types of the events `GET uri` answers, as NDJSON.
    async fn types_of(&self, uri: &str) -> Vec<String> {
        let (status, text) = self
            .send("GET", uri, "application/x-ndjson", String::new())
            .await;
        assert_eq!(status, 200, "{uri}: {text}");
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("an event per line");
                v["type"].as_str().expect("a type").to_owned()
            })
            .collect()
    }
}

const TYPES: [&str; 5] = [
    "order.placed",
    "order.item.added",
    "order",
    "payment.failed",
    "orders.placed",
];

async fn filled() -> Server {
    let s = server().await;
    let body: Vec<Value> = TYPES
        .iter()
        .map(|t| json!({"type": t, "data": {}}))
        .collect();
    let (status, text) = s
        .send(
            "POST",
            "/streams/order-1",
            "application/json",
            json!(body).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    s
}

/// `type` on `GET /all` takes patterns (percent-encoded `#` included) beside exact types; a
/// malformed one is a `400 invalid_event_type` naming it and saying what to write instead.
#[tokio::test]
async fn all_reads_take_type_patterns_and_refuse_malformed_ones() {
    let s = filled().await;
    assert_eq!(
        s.types_of("/all?type=order.*").await,
        ["order.placed"],
        "`*` is exactly one word"
    );
    assert_eq!(
        s.types_of("/all?type=order.%23").await,
        ["order.placed", "order.item.added", "order"],
        "`#` is zero or more words"
    );
    assert_eq!(
        s.types_of("/all?type=%23.failed,orders.placed&direction=backward&from=end")
            .await,
        ["orders.placed", "payment.failed"],
        "patterns and exact types: either"
    );
    for (bad, says) in [("order.*x", "word `*x`"), ("order..*", "word 2 is empty")] {
        let (status, text) = s
            .send(
                "GET",
                &format!("/all?type={bad}"),
                "application/json",
                String::new(),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {text}");
        let v: Value = serde_json::from_str(&text).expect("an error body");
        assert_eq!(v["error"]["code"], "invalid_query", "{text}");
        let message = v["error"]["message"].as_str().expect("a message");
        assert!(
            message.contains(bad) && message.contains(says),
            "{bad}: {message}"
        );
    }
}

/// A consumer group whose filter is `order.#` delivers exactly the events of those types, shows
/// the pattern in its settings, and a malformed pattern is refused when the group is created.
#[tokio::test]
async fn a_group_filters_by_a_type_pattern() {
    let s = filled().await;
    let (status, text) = s
        .send(
            "PUT",
            "/subscriptions/g1",
            "application/json",
            json!({"start": "start", "filter": {"types": ["order.#"]}}).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let (status, text) = s
        .send(
            "POST",
            "/subscriptions/g1/pull",
            "application/json",
            json!({"consumer": "c", "max": 10, "wait_ms": 5000}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let pulled: Value = serde_json::from_str(&text).expect("json");
    let types: Vec<&str> = pulled["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["event"]["type"].as_str().expect("a type"))
        .collect();
    assert_eq!(
        types,
        ["order.placed", "order.item.added", "order"],
        "{pulled}"
    );
    let (status, text) = s
        .send(
            "GET",
            "/subscriptions/g1",
            "application/json",
            String::new(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let info: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(info["filter"]["types"], json!(["order.#"]), "{info}");

    let (status, text) = s
        .send(
            "PUT",
            "/subscriptions/g2",
            "application/json",
            json!({"filter": {"types": ["order.#x"]}}).to_string(),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).expect("an error body");
    assert_eq!(v["error"]["code"], "invalid_event_type", "{text}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("order.#x")),
        "{text}"
    );
}
