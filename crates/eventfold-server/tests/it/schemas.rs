//! The schema registry's routes in process: register, read, list, the `422` of an append (on
//! each append route), who may register, and the answer of a store without a registry.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use eventfold_core::EventStore;
use eventfold_engine::{Engine, EngineOptions};
use eventfold_schema::Validating;
use eventfold_server::auth::Auth;
use eventfold_server::{AppState, ServerLimits};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const TOKENS: &str = r#"
[[tokens]]
token = "admin-token"
rights = ["read", "write", "admin"]
[[tokens]]
token = "writer-token"
rights = ["read", "write"]
"#;

fn app(validating: bool) -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine =
        Engine::open(dir.path().join("events"), EngineOptions::for_tests()).expect("engine");
    let store: Arc<dyn EventStore> = if validating {
        Arc::new(Validating::exclusive(engine))
    } else {
        Arc::new(engine)
    };
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, TOKENS).expect("tokens");
    let state = AppState::new(store, ServerLimits::default())
        .with_auth(Auth::new(None, Some(&file)).expect("tokens"));
    (eventfold_server::router(state), dir)
}

async fn send(
    app: &axum::Router,
    token: &str,
    method: &str,
    uri: &str,
    body: &str,
) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("answer");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let value = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::String(l.to_owned())))
        .collect::<Vec<_>>();
    let value = match value.len() {
        1 => value.into_iter().next().unwrap_or_default(),
        _ => Value::Array(value),
    };
    (status, value)
}

const ADMIN: &str = "admin-token";
const SCHEMA: &str =
    r#"{"type":"object","required":["total"],"properties":{"total":{"type":"number"}}}"#;

#[tokio::test]
async fn schemas_are_registered_read_and_listed() {
    let (app, _dir) = app(true);
    assert_eq!(
        send(&app, ADMIN, "GET", "/schemas", "").await,
        (200, json!({"schemas": []}))
    );
    let key = json!({"event_type": "order/placed", "schema_version": 1});
    let put = "/schemas/order%2Fplaced/1";
    assert_eq!(
        send(&app, ADMIN, "PUT", put, SCHEMA).await,
        (201, key.clone())
    );
    // Same document, other whitespace and key order: unchanged.
    let same = r#"{ "properties": {"total": {"type": "number"}}, "required": ["total"], "type": "object" }"#;
    assert_eq!(
        send(&app, ADMIN, "PUT", put, same).await,
        (200, key.clone())
    );
    let (status, body) = send(&app, ADMIN, "PUT", put, r#"{"type":"object"}"#).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "schema_conflict");
    assert_eq!(body["error"]["event_type"], "order/placed");
    assert_eq!(body["error"]["schema_version"], 1);
    assert_eq!(
        send(&app, ADMIN, "GET", put, "").await,
        (200, serde_json::from_str(SCHEMA).unwrap())
    );
    assert_eq!(
        send(&app, ADMIN, "GET", "/schemas", "").await,
        (200, json!({"schemas": [key]}))
    );
    for (uri, body, status, code) in [
        ("/schemas/order%2Fplaced/2", "", 404, "schema_not_found"),
        ("/schemas/t/1", "{", 400, "invalid_json"),
        ("/schemas/t/1", "[1]", 400, "invalid_schema"),
        ("/schemas/t/1", r#"{"type": 12}"#, 400, "invalid_schema"),
        (
            "/schemas/t/1",
            r##"{"$ref": "https://example.com/x"}"##,
            400,
            "invalid_schema",
        ),
        ("/schemas/t/x", SCHEMA, 400, "invalid_request"),
        ("/schemas/t/4294967296", SCHEMA, 400, "invalid_request"),
    ] {
        let method = if body.is_empty() { "GET" } else { "PUT" };
        let (got, answer) = send(&app, ADMIN, method, uri, body).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {uri} {body}: {answer}"
        );
    }
    let big = format!(
        r#"{{"description": "{}"}}"#,
        "x".repeat(eventfold_core::SCHEMA_BYTES_MAX)
    );
    let (got, answer) = send(&app, ADMIN, "PUT", "/schemas/t/1", &big).await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (400, Some("invalid_schema"))
    );
}

#[tokio::test]
async fn appends_that_do_not_match_are_422_on_every_append_route() {
    let (app, _dir) = app(true);
    assert_eq!(
        send(&app, ADMIN, "PUT", "/schemas/order.placed/1", SCHEMA)
            .await
            .0,
        201
    );
    let batch = r#"[{"type":"order.placed","data":{"total":1}},{"type":"order.placed","data":{"total":"x"}}]"#;
    let (status, body) = send(&app, ADMIN, "POST", "/streams/order-1", batch).await;
    assert_eq!(status, 422, "{body}");
    let e = &body["error"];
    assert_eq!(e["code"], "schema_validation_failed");
    assert_eq!(
        (
            &e["index"],
            &e["event_type"],
            &e["schema_version"],
            &e["instance_path"]
        ),
        (
            &json!(1),
            &json!("order.placed"),
            &json!(1),
            &json!("/total")
        )
    );
    assert!(
        e["reason"].as_str().is_some_and(|r| r.contains("number")),
        "{e}"
    );
    let (status, _) = send(&app, ADMIN, "GET", "/streams/order-1", "").await;
    assert_eq!(status, 404, "nothing of the batch was written");
    // A CloudEvent, and a line of POST /appends.
    let ce =
        r#"{"specversion":"1.0","id":"a","source":"s","type":"order.placed","data":{"total":"x"}}"#;
    let req = Request::post("/streams/order-1")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/cloudevents+json")
        .body(Body::from(ce))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("answer");
    assert_eq!(resp.status().as_u16(), 422);
    let lines = "{\"stream\":\"order-2\",\"events\":[{\"type\":\"order.placed\",\"data\":{\"total\":2}}]}\n\
                 {\"stream\":\"order-2\",\"events\":[{\"type\":\"order.placed\",\"data\":{}}]}\n";
    let req = Request::post("/appends")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/x-ndjson")
        .body(Body::from(lines))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("answer");
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let answers: Vec<Value> = String::from_utf8_lossy(&bytes)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers[0]["appended"].is_object(), "{answers:?}");
    assert_eq!(answers[1]["error"]["code"], "schema_validation_failed");
    assert_eq!(answers[1]["error"]["instance_path"], "");
    // The registry's stream is its own.
    let (status, body) = send(
        &app,
        ADMIN,
        "POST",
        "/streams/eventfold-schemas",
        r#"[{"type":"eventfold.schema-registered","data":{}}]"#,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_stream_name"))
    );
}

#[tokio::test]
async fn registering_needs_admin_and_a_registry() {
    let (app, _dir) = app(true);
    let (status, body) = send(&app, "writer-token", "PUT", "/schemas/t/1", SCHEMA).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(
        send(&app, "writer-token", "GET", "/schemas", "").await.0,
        200
    );
    let (plain, _dir2) = app_without_registry();
    for (method, uri) in [
        ("PUT", "/schemas/t/1"),
        ("GET", "/schemas/t/1"),
        ("GET", "/schemas"),
    ] {
        let (status, body) = send(&plain, ADMIN, method, uri, SCHEMA).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (501, Some("unsupported_by_store")),
            "{method} {uri}"
        );
    }
}

fn app_without_registry() -> (axum::Router, tempfile::TempDir) {
    app(false)
}
