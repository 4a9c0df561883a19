//! Who may do what, in process, one line per case: the scope of a request is decided from the
//! same parsed values its handler runs with, so no spelling of a query or path reaches more
//! streams than the token allows.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use eventfold_core::{EventStore, EventType, ExpectedRevision, NewEvent, StreamName};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_groups::Groups;
use eventfold_server::auth::Auth;
use eventfold_server::{AppState, ServerLimits};
use tower::ServiceExt as _;

const ADMIN: &str = "admin-token";
/// `read` on `order-`.
const READER: &str = "orders-reader";
/// `read`, `write` on `order-`.
const WRITER: &str = "orders-writer";
/// `read`, `write`, `admin` on `order-`.
const ORDERS_ADMIN: &str = "orders-admin";
/// `read` on `$parked-` (a prefix that names no user stream).
const PARKED_READER: &str = "parked-reader";
/// No rights at all, on every stream.
const NOTHING: &str = "nothing-token";

const TOKENS: &str = r#"
[[tokens]]
token = "orders-reader"
rights = ["read"]
prefixes = ["order-"]

[[tokens]]
token = "orders-writer"
rights = ["read", "write"]
prefixes = ["order-"]

[[tokens]]
token = "orders-admin"
rights = ["read", "write", "admin"]
prefixes = ["order-"]

[[tokens]]
token = "parked-reader"
rights = ["read"]
prefixes = ["$parked-"]

[[tokens]]
token = "nothing-token"
rights = []
"#;

struct Server {
    app: axum::Router,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn server() -> Server {
    let data = tempfile::tempdir().expect("tempdir");
    let state_dir = tempfile::tempdir().expect("tempdir");
    let tokens = data.path().join("tokens.toml");
    std::fs::write(&tokens, TOKENS).expect("tokens file");
    let engine: Arc<dyn EventStore> = Arc::new(
        Engine::open(data.path().join("events"), EngineOptions::for_tests()).expect("engine"),
    );
    let state: Arc<dyn EventStore> =
        Arc::new(Engine::open(state_dir.path(), EngineOptions::for_tests()).expect("engine"));
    for stream in ["order-1", "order-2", "user-1", "user-2", "order"] {
        engine
            .append(
                &StreamName::new(stream).expect("name"),
                ExpectedRevision::Any,
                vec![NewEvent::json(
                    EventType::new("seeded").expect("type"),
                    &serde_json::json!({ "stream": stream }),
                )],
            )
            .await
            .expect("append");
    }
    let groups = Groups::open(engine.clone(), state).await.expect("groups");
    let auth = Auth::new(Some(ADMIN.into()), Some(&tokens)).expect("tokens");
    let app = eventfold_server::router(
        AppState::new(engine, ServerLimits::default())
            .with_groups(groups)
            .with_auth(auth),
    );
    Server {
        app,
        _dirs: (data, state_dir),
    }
}

/// Sends one request; returns the status, the error code (if any) and the body's text (the
/// first chunk of a subscription).
async fn send(
    app: &axum::Router,
    token: Option<&str>,
    method: &str,
    uri: &str,
) -> (u16, String, String) {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    // A valid body for each writing route, so a refusal is about the token, not the body.
    let body = match (method, uri.split('?').next().unwrap_or(uri)) {
        ("POST", u) if u.starts_with("/streams/") => r#"[{"type":"t","data":{}}]"#,
        ("POST", "/appends") => r#"{"stream":"order-1","events":[{"type":"t","data":{}}]}"#,
        ("PUT", u) if u.ends_with("/metadata") => r#"{"max_count":10}"#,
        ("PUT", _) => r#"{"start":"start"}"#,
        ("POST", u) if u.ends_with("/pull") => r#"{"consumer":"c","wait_ms":0}"#,
        ("POST", u) if u.ends_with("/ack") => r#"{"delivery_ids":[]}"#,
        ("POST", u) if u.ends_with("/nack") => r#"{"delivery_ids":[],"action":"retry"}"#,
        _ => "",
    };
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let streaming = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let text = if streaming {
        // A subscription never ends: its first frame (history, or a heartbeat) is enough.
        let mut body = resp.into_body().into_data_stream();
        let first = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            futures::StreamExt::next(&mut body),
        )
        .await
        .ok()
        .flatten()
        .and_then(Result::ok)
        .unwrap_or_default();
        String::from_utf8_lossy(&first).into_owned()
    } else {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let code = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code, text)
}

/// `(token, method, uri, status, error code or "")`, checked in order (some cases write).
#[rustfmt::skip]
const CASES: &[(Option<&str>, &str, &str, u16, &str)] = &[
    // The bypasses: a key given twice, in any spelling, is refused before anything reads it.
    (Some(READER), "GET", "/all?stream_prefix=order-&stream_prefix=", 400, "duplicate_query_parameter"),
    (Some(READER), "GET", "/all?stream_prefix=order-&stream%5Fprefix=", 400, "duplicate_query_parameter"),
    (Some(READER), "GET", "/all?stream%5Fprefix=&stream_prefix=order-", 400, "duplicate_query_parameter"),
    (Some(READER), "GET", "/all?%73tream_prefix=order-&stream_prefix=order-", 400, "duplicate_query_parameter"),
    (Some(READER), "GET", "/all/subscribe?stream_prefix=order-&stream_prefix=", 400, "duplicate_query_parameter"),
    (Some(READER), "GET", "/all/subscribe?stream_prefix=order-&stream%5Fprefix=", 400, "duplicate_query_parameter"),
    (Some(READER), "GET", "/streams?prefix=order-&prefix=", 400, "duplicate_query_parameter"),
    (Some(READER), "GET", "/streams?prefix=order-&%70refix=", 400, "duplicate_query_parameter"),
    (Some(ADMIN), "GET", "/all?limit=1&limit=2", 400, "duplicate_query_parameter"),
    (Some(ORDERS_ADMIN), "DELETE", "/streams/order-2?hard=true&hard=false", 400, "duplicate_query_parameter"),
    (Some(READER), "GET", "/streams/order-1?limit=1&limit=2", 400, "duplicate_query_parameter"),
    (Some(READER), "GET", "/streams/order-1/subscribe?from=0&from=end", 400, "duplicate_query_parameter"),
    (Some(ADMIN), "GET", "/subscriptions/g/parked?limit=1&limit=2", 400, "duplicate_query_parameter"),
    (Some(ADMIN), "GET", "/subscriptions/g/stream?consumer=a&consumer=b", 400, "duplicate_query_parameter"),
    // Reads of $all and listings: the filter the handler uses is the filter authorized.
    (Some(READER), "GET", "/all?stream_prefix=order-", 200, ""),
    (Some(READER), "GET", "/all?stream%5Fprefix=order-", 200, ""),
    (Some(READER), "GET", "/all?stream_prefix=order%2D", 200, ""),
    (Some(READER), "GET", "/all?stream_prefix=order-1&category=user", 200, ""),
    (Some(READER), "GET", "/all", 403, "forbidden"),
    (Some(READER), "GET", "/all?stream_prefix=", 403, "forbidden"),
    (Some(READER), "GET", "/all?stream%5Fprefix=", 403, "forbidden"),
    (Some(READER), "GET", "/all?stream_prefix=ord", 403, "forbidden"),
    (Some(READER), "GET", "/all?stream_prefix=user-", 403, "forbidden"),
    (Some(READER), "GET", "/all?category=order", 403, "forbidden"),
    (Some(READER), "GET", "/all?type=seeded", 403, "forbidden"),
    (Some(READER), "GET", "/all/subscribe?from=start&stream_prefix=order-", 200, ""),
    (Some(READER), "GET", "/all/subscribe?from=start", 403, "forbidden"),
    (Some(READER), "GET", "/all/subscribe?stream_prefix=", 403, "forbidden"),
    (Some(READER), "GET", "/streams?prefix=order-", 200, ""),
    (Some(READER), "GET", "/streams", 403, "forbidden"),
    (Some(READER), "GET", "/streams?prefix=", 403, "forbidden"),
    (Some(READER), "GET", "/streams?prefix=user", 403, "forbidden"),
    // One stream: the decoded, validated name is the one authorized and the one read.
    (Some(READER), "GET", "/streams/order-1", 200, ""),
    (Some(READER), "GET", "/streams/order%2D1", 200, ""),
    (Some(READER), "GET", "/streams/user-1", 403, "forbidden"),
    (Some(READER), "GET", "/streams/user%2D1", 403, "forbidden"),
    (Some(READER), "GET", "/streams/%75ser-1", 403, "forbidden"),
    (Some(READER), "GET", "/streams/user-1%2F", 403, "forbidden"),
    (Some(READER), "GET", "/streams/order-1%2F..%2F..%2Fuser-1", 404, "stream_not_found"),
    (Some(READER), "GET", "/streams/order-1/../user-1", 404, "not_found"),
    (Some(READER), "GET", "/streams/../streams/user-1", 404, "not_found"),
    (Some(READER), "GET", "/streams/user-1/", 404, "not_found"),
    (Some(READER), "GET", "//streams/user-1", 404, "not_found"),
    (Some(READER), "GET", "/streams//user-1", 404, "not_found"),
    (Some(READER), "GET", "/streams/user-1/info", 403, "forbidden"),
    (Some(READER), "GET", "/streams/user-1/metadata", 403, "forbidden"),
    (Some(READER), "GET", "/streams/user-1/subscribe", 403, "forbidden"),
    (Some(READER), "GET", "/streams/order-1/info", 200, ""),
    // A group's parked events are copies of any stream's events: read on every stream.
    (Some(READER), "GET", "/streams/$parked-g", 403, "forbidden"),
    (Some(PARKED_READER), "GET", "/streams/$parked-g", 403, "forbidden"),
    (Some(PARKED_READER), "GET", "/streams/%24parked-g", 403, "forbidden"),
    // Writes.
    (Some(READER), "POST", "/streams/order-9", 403, "forbidden"),
    (Some(WRITER), "POST", "/streams/order-9", 201, ""),
    (Some(WRITER), "POST", "/streams/order%2D9", 201, ""),
    (Some(WRITER), "POST", "/streams/user-9", 403, "forbidden"),
    (Some(WRITER), "POST", "/streams/user%2D9", 403, "forbidden"),
    (Some(WRITER), "POST", "/streams/order-9%2F..%2Fuser-1", 201, ""),
    (Some(WRITER), "POST", "/streams/order-9?stream=user-1", 400, "invalid_query"),
    (Some(WRITER), "POST", "/streams/$all", 400, "invalid_stream_name"),
    // Admin: metadata and deletes.
    (Some(WRITER), "PUT", "/streams/order-1/metadata", 403, "forbidden"),
    (Some(ORDERS_ADMIN), "PUT", "/streams/user-1/metadata", 403, "forbidden"),
    (Some(ORDERS_ADMIN), "PUT", "/streams/order-1/metadata", 200, ""),
    (Some(WRITER), "DELETE", "/streams/order-2", 403, "forbidden"),
    (Some(ORDERS_ADMIN), "DELETE", "/streams/user-2", 403, "forbidden"),
    (Some(ORDERS_ADMIN), "DELETE", "/streams/user%2D2?hard=true", 403, "forbidden"),
    (Some(ORDERS_ADMIN), "DELETE", "/streams/order-2", 204, ""),
    // Consumer groups read every stream: a prefix token can do nothing with them.
    (Some(ORDERS_ADMIN), "PUT", "/subscriptions/g", 403, "forbidden"),
    (Some(ADMIN), "PUT", "/subscriptions/g", 201, ""),
    (Some(READER), "GET", "/subscriptions", 403, "forbidden"),
    (Some(READER), "GET", "/subscriptions/g", 403, "forbidden"),
    (Some(READER), "POST", "/subscriptions/g/pull", 403, "forbidden"),
    (Some(READER), "POST", "/subscriptions/g/ack", 403, "forbidden"),
    (Some(READER), "POST", "/subscriptions/g/nack", 403, "forbidden"),
    (Some(READER), "GET", "/subscriptions/g/parked", 403, "forbidden"),
    (Some(READER), "GET", "/subscriptions/g/stream?consumer=c", 403, "forbidden"),
    (Some(ORDERS_ADMIN), "POST", "/subscriptions/g/parked/replay", 403, "forbidden"),
    (Some(ORDERS_ADMIN), "DELETE", "/subscriptions/g", 403, "forbidden"),
    (Some(ADMIN), "GET", "/subscriptions/g", 200, ""),
    (Some(ADMIN), "GET", "/streams/$parked-g", 200, ""),
    // The server's own resources, and who needs no token.
    (Some(READER), "GET", "/metrics", 403, "forbidden"),
    (Some(READER), "GET", "/openapi.json", 403, "forbidden"),
    (None, "GET", "/all?stream_prefix=order-", 401, "unauthenticated"),
    (None, "GET", "/all?stream_prefix=order-&stream_prefix=", 401, "unauthenticated"),
    (Some("not-a-token"), "GET", "/streams/order-1", 401, "unauthenticated"),
    (None, "GET", "/health/live", 200, ""),
    (None, "GET", "/health/ready", 200, ""),
];

#[tokio::test]
async fn every_spelling_of_a_request_is_authorized_on_what_it_does() {
    let s = server().await;
    let mut failures = Vec::new();
    for (i, (token, method, uri, status, code)) in CASES.iter().enumerate() {
        let (got, got_code, text) = send(&s.app, *token, method, uri).await;
        if got != *status || (!code.is_empty() && got_code != *code) {
            failures.push(format!(
                "case {i}: {method} {uri} as {token:?}: expected {status} {code}, got {got} {got_code}: {text}"
            ));
        }
        // Whatever a prefix token gets back never holds another stream's events.
        let prefix_token = [Some(READER), Some(WRITER), Some(ORDERS_ADMIN)].contains(token);
        if prefix_token && got < 300 && text.contains("\"user-") {
            failures.push(format!(
                "case {i}: {method} {uri}: the answer shows a user- stream: {text}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The writes outside the token's prefix wrote nothing.
    let (_, _, user1) = send(&s.app, Some(ADMIN), "GET", "/streams/user-1").await;
    assert_eq!(user1.matches("\"revision\"").count(), 1, "{user1}");
    let (status, _, _) = send(&s.app, Some(ADMIN), "GET", "/streams/user-9").await;
    assert_eq!(status, 404);
}

/// Every operation of the route table (as `/openapi.json` lists it) refuses a request without
/// a token and one whose token has no rights, but the two health checks: a route cannot be
/// added without deciding who may call it.
#[tokio::test]
async fn every_route_needs_a_right_but_the_health_checks() {
    let s = server().await;
    let (status, _, doc) = send(&s.app, Some(ADMIN), "GET", "/openapi.json").await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).expect("JSON");
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, _) in ops.as_object().expect("operations") {
            let method = method.to_uppercase();
            let mut uri = path
                .replace("{stream}", "order-1")
                .replace("{group}", "g")
                .replace("{version}", "1");
            if uri.ends_with("/subscriptions/g/stream") {
                uri.push_str("?consumer=c"); // required: a request that does not parse is a 400
            }
            let open = path.starts_with("/health/");
            for (token, refused) in [(None, 401), (Some(NOTHING), 403)] {
                let (got, _, text) = send(&s.app, token, &method, &uri).await;
                if open {
                    assert_eq!(got, 200, "{method} {uri} as {token:?}: {text}");
                } else {
                    assert_eq!(got, refused, "{method} {uri} as {token:?}: {text}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations in the document");
}
