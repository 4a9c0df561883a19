//! `GET /stats` and the console's files, in process: the figures follow appends, streams and
//! groups; the console is served with its security headers and without a token, the API not.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use eventfold_core::EventStore;
use eventfold_engine::{Engine, EngineOptions};
use eventfold_groups::Groups;
use eventfold_server::auth::Auth;
use eventfold_server::{AppState, ServerLimits};
use serde_json::{Value, json};
use tower::ServiceExt as _;

async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, axum::http::HeaderMap, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = if body.is_null() {
        Body::empty()
    } else {
        Body::from(body.to_string())
    };
    let resp = app
        .clone()
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        headers,
        String::from_utf8(bytes.to_vec()).expect("utf-8"),
    )
}

#[tokio::test]
async fn stats_follow_the_store_and_the_groups() {
    let data = tempfile::tempdir().expect("tempdir");
    let state_dir = tempfile::tempdir().expect("tempdir");
    let engine: Arc<dyn EventStore> =
        Arc::new(Engine::open(data.path(), EngineOptions::for_tests()).expect("engine"));
    let state: Arc<dyn EventStore> =
        Arc::new(Engine::open(state_dir.path(), EngineOptions::for_tests()).expect("engine"));
    let groups = Groups::open(engine.clone(), state).await.expect("groups");
    let app = eventfold_server::router(
        AppState::new(engine, ServerLimits::default())
            .with_groups(groups)
            .with_stored_bytes(Arc::new(|| Ok(4096))),
    );
    let (status, _, text) = send(&app, "GET", "/stats", None, Value::Null).await;
    assert_eq!(status, 200, "{text}");
    let s: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(s["head_position"], Value::Null);
    assert_eq!(s["streams"], 0);
    assert_eq!(s["streams_complete"], true);
    assert_eq!(s["groups"], 0);
    assert_eq!(s["stored_bytes"], 4096);
    assert_eq!(s["auth"], false);
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    for stream in ["order-1", "order-2", "user-1"] {
        let (status, _, text) = send(
            &app,
            "POST",
            &format!("/streams/{stream}"),
            None,
            json!([{"type": "t", "data": {}}, {"type": "t", "data": {}}]),
        )
        .await;
        assert_eq!(status, 201, "{text}");
    }
    let (status, _, text) = send(&app, "PUT", "/subscriptions/billing", None, json!({})).await;
    assert_eq!(status, 201, "{text}");
    let (_, _, text) = send(&app, "GET", "/stats", None, Value::Null).await;
    let s: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(s["head_position"], 5);
    assert_eq!(s["streams"], 3);
    assert_eq!(s["groups"], 1);
}

#[tokio::test]
async fn the_console_is_served_without_a_token_with_its_security_headers() {
    let data = tempfile::tempdir().expect("tempdir");
    let engine: Arc<dyn EventStore> =
        Arc::new(Engine::open(data.path(), EngineOptions::for_tests()).expect("engine"));
    let app = eventfold_server::router(
        AppState::new(engine, ServerLimits::default())
            .with_auth(Auth::new(Some("secret-token".into()), None).expect("auth")),
    );
    for (uri, media) in [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/style.css", "text/css"),
        ("/console/config.json", "application/json"),
    ] {
        let (status, headers, text) = send(&app, "GET", uri, None, Value::Null).await;
        assert_eq!(status, 200, "{uri}: {text}");
        let h = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            h("content-type").starts_with(media),
            "{uri}: {}",
            h("content-type")
        );
        assert_eq!(
            h("content-security-policy"),
            eventfold_server::console::CONTENT_SECURITY_POLICY_VALUE,
            "{uri}"
        );
        assert_eq!(h("x-content-type-options"), "nosniff", "{uri}");
    }
    let (_, _, text) = send(&app, "GET", "/console/config.json", None, Value::Null).await;
    let config: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(config["auth"], true);
    // The files hold no data; the API still needs the token.
    let (status, _, _) = send(&app, "GET", "/stats", None, Value::Null).await;
    assert_eq!(status, 401);
    let (status, _, _) = send(&app, "GET", "/stats", Some("secret-token"), Value::Null).await;
    assert_eq!(status, 200);
    let (status, _, text) = send(&app, "GET", "/console/../stats", None, Value::Null).await;
    assert_ne!(status, 200, "{text}");
    let (status, _, text) = send(&app, "GET", "/console/missing.js", None, Value::Null).await;
    assert_eq!(status, 404, "{text}");
}

/// An application that embeds the API in its own router gets no console, so its own `/` does
/// not collide with the console's.
#[tokio::test]
async fn the_api_router_leaves_the_root_to_the_application() {
    let data = tempfile::tempdir().expect("tempdir");
    let engine: Arc<dyn EventStore> =
        Arc::new(Engine::open(data.path(), EngineOptions::for_tests()).expect("engine"));
    let api = eventfold_server::api_router(AppState::new(engine, ServerLimits::default()));
    for uri in ["/", "/console/app.js"] {
        let (status, _, text) = send(&api, "GET", uri, None, Value::Null).await;
        assert_eq!(status, 404, "{uri}: {text}");
    }
    let (status, _, _) = send(&api, "GET", "/stats", None, Value::Null).await;
    assert_eq!(status, 200);
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { "the application's page" }),
        )
        .merge(api);
    let (status, _, text) = send(&app, "GET", "/", None, Value::Null).await;
    assert_eq!((status, text.as_str()), (200, "the application's page"));
}
