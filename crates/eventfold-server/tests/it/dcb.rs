//! Tags, reads by query and conditional appends over HTTP, in process: the `tags` of append
//! bodies and read answers, `GET /all?query=`, the `Append-Condition` header (201, 409 with the
//! matching position, 400 when malformed) and a `POST /appends` line's `condition`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use eventfold_core::EventStore;
use eventfold_engine::{Engine, EngineOptions};
use eventfold_server::{AppState, ServerLimits};
use serde_json::{Value, json};
use tower::ServiceExt as _;

fn app() -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn EventStore> =
        Arc::new(Engine::open(dir.path(), EngineOptions::for_tests()).expect("engine"));
    (
        eventfold_server::router(AppState::new(store, ServerLimits::default())),
        dir,
    )
}

/// `POST /streams/{stream}` with `body` and an optional `Append-Condition`.
async fn append(
    app: &axum::Router,
    stream: &str,
    body: Value,
    condition: Option<&str>,
) -> (u16, Value) {
    let mut req =
        Request::post(format!("/streams/{stream}")).header("content-type", "application/json");
    if let Some(c) = condition {
        req = req.header("append-condition", c);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).expect("a request"))
        .await
        .expect("an answer");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get(app: &axum::Router, uri: &str) -> (u16, Value) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("a request"))
        .await
        .expect("an answer");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `query`'s JSON, percent-encoded for a query string.
fn encoded(query: &Value) -> String {
    query
        .to_string()
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn positions(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["position"].as_u64().expect("a position"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_queries_and_conditions_over_http() {
    let (app, _dir) = app();
    let (s, _) = append(
        &app,
        "course-c1",
        json!([{"type": "CourseDefined", "data": {"capacity": 1}, "tags": ["course:c1"]}]),
        None,
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = append(
        &app,
        "other-1",
        json!([{"type": "Noise", "data": {}}]),
        None,
    )
    .await;
    assert_eq!(s, 201);
    // Tags come back with the event; an event without tags has no field.
    let (s, page) = get(&app, "/all").await;
    assert_eq!(s, 200);
    assert_eq!(page["events"][0]["tags"], json!(["course:c1"]));
    assert!(page["events"][1].get("tags").is_none(), "{page}");
    // Read by query.
    let q = json!({"items": [{"types": ["CourseDefined", "StudentSubscribed"], "tags": ["course:c1"]}]});
    let (s, page) = get(&app, &format!("/all?query={}", encoded(&q))).await;
    assert_eq!(s, 200);
    assert_eq!(positions(&page), [0]);
    let (s, err) = get(&app, "/all?query=course%3Ac1").await;
    assert_eq!(s, 400);
    assert_eq!(err["error"]["code"], "invalid_query");
    assert_eq!(err["error"]["parameter"], "query");
    // A conditional append after the read's last position passes.
    let condition = json!({"fail_if_events_match": q, "after": 0}).to_string();
    let subscribe = |student: &str| {
        json!([{"type": "StudentSubscribed", "data": {"student": student},
            "tags": ["course:c1", format!("student:{student}")]}])
    };
    let (s, first) = append(&app, "subscription-c1", subscribe("s1"), Some(&condition)).await;
    assert_eq!(s, 201, "{first}");
    // The same condition again: the first subscription matches it.
    let (s, err) = append(&app, "subscription-c1", subscribe("s2"), Some(&condition)).await;
    assert_eq!(s, 409, "{err}");
    assert_eq!(err["error"]["code"], "append_condition_failed");
    assert_eq!(err["error"]["stream"], "subscription-c1");
    assert_eq!(err["error"]["after"], 0);
    assert_eq!(err["error"]["position"], first["first_position"]);
    // Malformed conditions and tags.
    for bad in [
        "{}",
        "nope",
        r#"{"fail_if_events_match":{"items":[{"tags":["a b"]}]}}"#,
    ] {
        let (s, err) = append(&app, "subscription-c1", subscribe("s3"), Some(bad)).await;
        assert_eq!(s, 400, "{bad}");
        assert_eq!(err["error"]["code"], "invalid_append_condition", "{bad}");
    }
    let (s, err) = append(
        &app,
        "x-1",
        json!([{"type": "t", "data": {}, "tags": ["has space"]}]),
        None,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(err["error"]["code"], "invalid_tag");
    assert_eq!(err["error"]["index"], 0);
    // Nothing of the refused appends was written.
    let (_, page) = get(&app, "/all").await;
    assert_eq!(positions(&page), [0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_line_carries_its_condition() {
    let (app, _dir) = app();
    let q = json!({"items": [{"tags": ["seat:1"]}]});
    let line = |stream: &str| {
        json!({"stream": stream, "events": [{"type": "SeatTaken", "data": {}, "tags": ["seat:1"]}],
            "condition": {"fail_if_events_match": q}})
        .to_string()
    };
    let body = format!(
        "{}\n{}\n{}\n",
        line("a-1"),
        line("b-1"),
        json!({"stream": "c-1", "events": [{"type": "t", "data": {}}], "condition": {"after": 1}})
    );
    let resp = app
        .clone()
        .oneshot(
            Request::post("/appends")
                .header("content-type", "application/x-ndjson")
                .body(Body::from(body))
                .expect("a request"),
        )
        .await
        .expect("an answer");
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("a body");
    let answers: Vec<Value> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a JSON line"))
        .collect();
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0]["appended"]["first_position"], 0, "{answers:?}");
    assert_eq!(answers[1]["error"]["code"], "append_condition_failed");
    assert_eq!(answers[1]["error"]["position"], 0);
    assert_eq!(answers[1]["error"]["line"], 1);
    assert_eq!(answers[2]["error"]["code"], "invalid_append_condition");
}
