//! CloudEvents out: CloudEvents appended (structured, batch and binary mode) and read back as
//! a CloudEvents batch, NDJSON of CloudEvents and SSE/NDJSON subscriptions of CloudEvents,
//! each equal to what came in plus eventfold's own extensions; without CloudEvents in `Accept`,
//! the answers are eventfold's own shape as before.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use eventfold_core::EventStore;
use eventfold_engine::{Engine, EngineOptions};
use eventfold_server::{AppState, ServerLimits};
use http_body_util::BodyExt as _;
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

struct Server {
    app: axum::Router,
    _dir: tempfile::TempDir,
}

fn server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn EventStore> =
        Arc::new(Engine::open(dir.path(), EngineOptions::for_tests()).expect("engine"));
    Server {
        app: eventfold_server::router(AppState::new(store, ServerLimits::default())),
        _dir: dir,
    }
}

impl Server {
    async fn send(&self, req: Request<Body>) -> axum::response::Response {
        self.app.clone().oneshot(req).await.expect("answer")
    }

    async fn append(&self, stream: &str, content_type: &str, body: &Value) {
        let req = Request::post(format!("/streams/{stream}"))
            .header("content-type", content_type)
            .body(Body::from(body.to_string()))
            .expect("request");
        let resp = self.send(req).await;
        assert_eq!(resp.status(), 201, "append {body}");
    }

    /// A `GET` answered with the given content type; its body.
    async fn get(&self, uri: &str, accept: &str, want_type: &str) -> (Vec<u8>, Option<String>) {
        let req = Request::get(uri)
            .header("accept", accept)
            .body(Body::empty())
            .expect("request");
        let resp = self.send(req).await;
        assert_eq!(resp.status(), 200, "GET {uri}");
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], want_type, "GET {uri} as {accept}");
        let next = headers
            .get("eventfold-next")
            .map(|v| v.to_str().expect("text").to_owned());
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (body.to_vec(), next)
    }

    /// The first `n` events of a subscription, each as the JSON its frame or line carries.
    async fn subscribe(&self, uri: &str, accept: &str, want_type: &str, n: usize) -> Vec<Value> {
        let req = Request::get(uri)
            .header("accept", accept)
            .body(Body::empty())
            .expect("request");
        let resp = self.send(req).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], want_type);
        let sse = want_type.starts_with("text/event-stream");
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while got.len() < n {
            let frame = tokio::time::timeout(Duration::from_secs(20), body.frame())
                .await
                .expect("a chunk in time")
                .expect("open")
                .expect("frame");
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let text = String::from_utf8(data.to_vec()).expect("utf-8");
            for line in text.lines() {
                let json = if sse {
                    line.strip_prefix("data: ")
                } else {
                    Some(line).filter(|l| !l.is_empty())
                };
                if let Some(j) = json {
                    got.push(serde_json::from_str(j).expect("json"));
                }
            }
        }
        got
    }
}

/// What was appended, and eventfold's extensions the read adds.
fn without_own(mut v: Value, stream: &str, revision: u64) -> Value {
    let m = v.as_object_mut().expect("an object");
    assert_eq!(m.remove("eventfoldstream"), Some(json!(stream)));
    assert_eq!(
        m.remove("eventfoldrevision"),
        Some(json!(revision.to_string()))
    );
    assert!(m.remove("eventfoldposition").is_some());
    assert!(m.remove("eventfoldid").is_some());
    v
}

#[tokio::test]
async fn cloudevents_appended_read_back_as_cloudevents_in_every_format() {
    let s = server();
    let full = json!({
        "specversion": "1.0", "id": "order-42-placed", "source": "https://shop.example/orders",
        "type": "order.placed", "time": "2026-11-22T10:00:00.5Z", "subject": "order-42",
        "dataschema": "https://shop.example/schemas/placed.json",
        "datacontenttype": "application/json", "tenant": "acme", "priority": 3, "urgent": true,
        "traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE",
        "data": {"total": 12.5, "lines": [{"sku": "a", "n": 2}]},
    });
    let text = json!({
        "specversion": "1.0", "id": "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d", "source": "/notes",
        "type": "note.added", "time": "2026-11-22T10:00:01Z", "datacontenttype": "text/plain",
        "traceparent": TRACEPARENT, "data": "ünïcode text",
    });
    s.append("ce-1", "application/cloudevents+json", &full)
        .await;
    s.append("ce-1", "application/cloudevents-batch+json", &json!([text]))
        .await;
    // Binary mode: attributes in ce- headers (percent-encoded), the data as the body.
    let req = Request::post("/streams/ce-1")
        .header("content-type", "application/octet-stream")
        .header("ce-specversion", "1.0")
        .header("ce-id", "bin-1")
        .header("ce-source", "/sensors/7")
        .header("ce-type", "reading.taken")
        .header("ce-time", "2026-11-22T10:00:02Z")
        .header("ce-subject", "caf%C3%A9")
        .header("ce-traceparent", TRACEPARENT)
        .body(Body::from(vec![0u8, 1, 2, 255]))
        .expect("request");
    assert_eq!(s.send(req).await.status(), 201);
    let binary = json!({
        "specversion": "1.0", "id": "bin-1", "source": "/sensors/7", "type": "reading.taken",
        "time": "2026-11-22T10:00:02Z", "subject": "café", "traceparent": TRACEPARENT,
        "datacontenttype": "application/octet-stream", "data_base64": "AAEC/w==",
    });
    let sent = [full, text, binary];

    // A read page as a batch.
    let (body, next) = s
        .get(
            "/streams/ce-1?from=start",
            "application/cloudevents-batch+json",
            "application/cloudevents-batch+json",
        )
        .await;
    assert_eq!(next, None);
    let batch: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
    assert_eq!(batch.len(), 3);
    for (i, (got, want)) in batch.iter().zip(&sent).enumerate() {
        assert_eq!(
            without_own(got.clone(), "ce-1", i as u64),
            *want,
            "event {i}"
        );
    }
    // The UUID id is the event's id: `eventfoldid` says the same.
    assert_eq!(batch[1]["eventfoldid"], sent[1]["id"]);
    let (_, next) = s
        .get(
            "/streams/ce-1?from=start&limit=2",
            "application/cloudevents-batch+json",
            "application/cloudevents-batch+json",
        )
        .await;
    assert_eq!(next.as_deref(), Some("2"));

    // `$all` as NDJSON of CloudEvents: the same objects, one per line.
    let (body, _) = s
        .get(
            "/all?from=start",
            "application/x-ndjson; format=cloudevents",
            "application/x-ndjson; format=cloudevents",
        )
        .await;
    let lines: Vec<Value> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("json line"))
        .collect();
    assert_eq!(lines, batch);
    let (body, _) = s
        .get(
            "/all?from=start",
            "application/cloudevents-batch+json",
            "application/cloudevents-batch+json",
        )
        .await;
    assert_eq!(serde_json::from_slice::<Vec<Value>>(&body).unwrap(), batch);

    // Subscriptions, SSE and NDJSON, of a stream and of `$all`.
    for (uri, accept, want) in [
        (
            "/streams/ce-1/subscribe?from=start",
            "text/event-stream; format=cloudevents",
            "text/event-stream; format=cloudevents",
        ),
        (
            "/all/subscribe?from=start",
            "application/x-ndjson;format=cloudevents",
            "application/x-ndjson; format=cloudevents",
        ),
    ] {
        assert_eq!(s.subscribe(uri, accept, want, 3).await, batch, "{uri}");
    }

    // Without CloudEvents in Accept: eventfold's own shape, as before.
    let (body, _) = s
        .get("/streams/ce-1", "application/json", "application/json")
        .await;
    let page: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(page["events"][0]["metadata"]["ce_id"], "order-42-placed");
    let own = s
        .subscribe(
            "/streams/ce-1/subscribe?from=start",
            "application/x-ndjson",
            "application/x-ndjson",
            1,
        )
        .await;
    assert_eq!(own[0]["stream"], "ce-1");
}

/// An event appended in eventfold's own shape goes out with the defaults: its id, the stream's
/// URL as `source`, the commit time, and the metadata that has no CloudEvents name in
/// `eventfoldmetadata`, which an append of the CloudEvent gives back.
#[tokio::test]
async fn a_native_event_gets_defaults_and_survives_a_trip_through_cloudevents() {
    let s = server();
    s.append(
        "order-1",
        "application/json",
        &json!([{"type": "placed", "data": {"n": 1}, "metadata": {"correlation_id": "c-1", "tenant": "acme"}}]),
    )
    .await;
    let (body, _) = s
        .get(
            "/streams/order-1",
            "application/cloudevents-batch+json",
            "application/cloudevents-batch+json",
        )
        .await;
    let ce: Vec<Map<String, Value>> = serde_json::from_slice(&body).expect("json");
    let ce = &ce[0];
    assert_eq!(ce["source"], "/streams/order-1");
    assert_eq!(ce["id"], ce["eventfoldid"]);
    assert!(ce["time"].as_str().expect("time").ends_with('Z'));
    assert_eq!(ce["tenant"], "acme");
    assert!(
        ce["traceparent"].is_string(),
        "the context the server stored"
    );
    // Into another store: in this one the event's id is inside the idempotency window, so a
    // copy to another stream is `409 duplicate_event_id`.
    let other = server();
    other
        .append(
            "copy-1",
            "application/cloudevents+json",
            &Value::Object(ce.clone()),
        )
        .await;
    let (body, _) = other
        .get("/streams/copy-1", "application/json", "application/json")
        .await;
    let page: Value = serde_json::from_slice(&body).expect("json");
    let md = &page["events"][0]["metadata"];
    assert_eq!(md["correlation_id"], "c-1");
    assert_eq!(md["tenant"], "acme");
    assert_eq!(page["events"][0]["id"], ce["id"]);
    assert!(md.get("eventfoldstream").is_none());
}
