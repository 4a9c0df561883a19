//! `until` over HTTP, in process: `GET /streams/{stream}` and `GET /all` as of a time, as JSON,
//! NDJSON and CloudEvents; a malformed time's `400`; and the parameter in /openapi.json.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use eventfold_core::{
    EventStore, EventType, ExpectedRevision, ImportBatch, NewEvent, Revision, StreamName, Timestamp,
};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_server::{AppState, ServerLimits};
use serde_json::{Value, json};
use tower::ServiceExt as _;

async fn get(app: &axum::Router, uri: &str, accept: &str) -> (u16, String) {
    let req = Request::get(uri)
        .header("accept", accept)
        .body(Body::empty())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The `n` of each event's data, from any of the three shapes.
fn ns(accept: &str, text: &str) -> Vec<u64> {
    let values: Vec<Value> = match accept {
        "application/json" => {
            let v: Value = serde_json::from_str(text).expect("a page");
            v["events"].as_array().expect("events").clone()
        }
        "application/cloudevents-batch+json" => serde_json::from_str(text).expect("a batch"),
        _ => text
            .lines()
            .map(|l| serde_json::from_str(l).expect("an event per line"))
            .collect(),
    };
    values
        .iter()
        .map(|v| v["data"]["n"].as_u64().expect("data.n"))
        .collect()
}

#[tokio::test]
async fn reads_as_of_a_time_in_every_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(Engine::open(dir.path(), EngineOptions::for_tests()).expect("engine"));
    // Events 0..4 of `t-1`, an hour ago, a second apart.
    let base = Timestamp::now().micros() - 3_600_000_000;
    let at = |i: i64| Timestamp(base + i * 1_000_000);
    let ty = EventType::new("tick").expect("type");
    engine
        .append_imported(
            &StreamName::new("t-1").expect("name"),
            ExpectedRevision::NoStream,
            ImportBatch {
                first_revision: Revision(0),
                events: (0..4)
                    .map(|i| (NewEvent::json(ty.clone(), &json!({"n": i})), at(i)))
                    .collect(),
            },
        )
        .await
        .expect("import");
    let store: Arc<dyn EventStore> = engine;
    let app = eventfold_server::router(AppState::new(store, ServerLimits::default()));
    let until = at(1).to_string();
    for accept in [
        "application/json",
        "application/x-ndjson",
        "application/cloudevents-batch+json",
        "application/x-ndjson; format=cloudevents",
    ] {
        for (uri, want) in [
            (format!("/streams/t-1?until={until}"), vec![0, 1]),
            (format!("/streams/t-1?from=end&until={until}"), vec![1, 0]),
            (format!("/all?until={until}"), vec![0, 1]),
            (format!("/all?direction=backward&until={until}"), vec![1, 0]),
            ("/all?direction=backward".to_owned(), vec![3, 2, 1, 0]),
        ] {
            let (status, text) = get(&app, &uri, accept).await;
            assert_eq!(status, 200, "{uri} {accept}: {text}");
            assert_eq!(ns(accept, &text), want, "{uri} {accept}");
        }
    }
    let (_, page) = get(&app, &format!("/all?until={until}"), "application/json").await;
    let page: Value = serde_json::from_str(&page).expect("a page");
    assert_eq!(page["next"], Value::Null, "nothing further as of `until`");

    for bad in ["yesterday", "2026-01-31", "1700000000"] {
        for path in ["/streams/t-1", "/all"] {
            let (status, text) =
                get(&app, &format!("{path}?until={bad}"), "application/json").await;
            assert_eq!(status, 400, "{path} until={bad}: {text}");
            let v: Value = serde_json::from_str(&text).expect("an error");
            assert_eq!(v["error"]["code"], "invalid_query", "{text}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("until") && m.contains("RFC 3339")),
                "{text}"
            );
        }
    }
    let (status, text) = get(
        &app,
        "/all/subscribe?until=2026-01-31T00:00:00Z",
        "application/x-ndjson",
    )
    .await;
    assert_eq!(status, 400, "subscriptions do not take `until`: {text}");

    let (_, doc) = get(&app, "/openapi.json", "application/json").await;
    let doc: Value = serde_json::from_str(&doc).expect("openapi");
    for path in ["/streams/{stream}", "/all"] {
        let params = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        let until = params
            .iter()
            .find(|p| p["name"] == "until")
            .unwrap_or_else(|| panic!("{path} documents `until`"));
        assert_eq!(until["in"], "query");
        assert_eq!(until["schema"]["format"], "date-time", "{path}");
    }
}
