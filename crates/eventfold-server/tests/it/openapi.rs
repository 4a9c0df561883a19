use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_server::{AppState, ServerLimits};
use tower::ServiceExt as _;

/// Every operation of `/openapi.json` reaches a handler (not the 404/405 fallbacks), and the
/// document is the one the server serves.
#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_server_has() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), EngineOptions::for_tests()).expect("engine");
    let app = eventfold_server::router(AppState::new(Arc::new(engine), ServerLimits::default()));
    let resp = app
        .clone()
        .oneshot(
            Request::get("/openapi.json")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let mut count = 0;
    for (path, ops) in paths {
        for (method, _) in ops.as_object().expect("operations") {
            count += 1;
            let uri = path.replace("{stream}", "doc-1");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let resp = app
                .clone()
                .oneshot(
                    Request::builder()
                        .method(m)
                        .uri(&uri)
                        .body(Body::empty())
                        .expect("request"),
                )
                .await
                .expect("response");
            let status = resp.status().as_u16();
            let streaming = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("text/event-stream"));
            if streaming {
                // A subscription answers with an endless stream: its headers are the proof.
                assert_eq!(status, 200, "{method} {uri}");
                continue;
            }
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            assert!(
                code != "not_found" && code != "method_not_allowed",
                "{method} {uri} is documented but not routed: {status} {text}"
            );
        }
    }
    assert!(count >= 14, "{count} operations");
    for required in [
        "/streams/{stream}",
        "/streams/{stream}/info",
        "/streams/{stream}/metadata",
        "/streams/{stream}/subscribe",
        "/streams",
        "/all",
        "/all/subscribe",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(required), "{required} missing");
    }
}

/// A body the document describes as an object is refused when it is an array: serde's derived
/// structs take an array of their fields in order, and `PUT /streams/{s}/metadata` answered
/// 200 to `[null, null]` (found by schemathesis, `scripts/schemathesis`). The groups' bodies
/// share the parse (`fuzz::json_bodies`).
#[tokio::test]
async fn an_array_is_not_an_object_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), EngineOptions::for_tests()).expect("engine");
    let app = eventfold_server::router(AppState::new(Arc::new(engine), ServerLimits::default()));
    for (body, want) in [("[null, null]", 400), ("[]", 400), (" {}", 200)] {
        let resp = app
            .clone()
            .oneshot(
                Request::builder()
                    .method(Method::PUT)
                    .uri("/streams/doc-1/metadata")
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(resp.status(), want, "{body}");
    }
    assert_eq!(eventfold_server::fuzz::json_bodies(b"[null, null]"), 0);
}
