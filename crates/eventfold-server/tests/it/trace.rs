//! W3C trace context on appends: the request's `traceparent`/`tracestate` parsed once and
//! stored in each event (a malformed one refused), a context stored when there is none, and the
//! `send` producer span (OpenTelemetry's in-memory exporter).

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use eventfold_core::{EventStore, ReadStream, StreamName, TraceContext};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_server::{AppState, ServerLimits};
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tower::ServiceExt as _;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

struct Server {
    app: axum::Router,
    store: Arc<dyn EventStore>,
    _dir: tempfile::TempDir,
}

fn server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn EventStore> = Arc::new(
        Engine::open(dir.path().join("events"), EngineOptions::for_tests()).expect("engine"),
    );
    Server {
        app: eventfold_server::router(AppState::new(store.clone(), ServerLimits::default())),
        store,
        _dir: dir,
    }
}

async fn post(
    app: &axum::Router,
    uri: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, serde_json::Value) {
    let mut req = Request::post(uri).header("content-type", content_type);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("answer");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    (
        status,
        serde_json::from_slice(first_line).unwrap_or(serde_json::Value::Null),
    )
}

/// The contexts stored in `stream`'s events, in order.
async fn stored(store: &Arc<dyn EventStore>, stream: &str) -> Vec<TraceContext> {
    let s = store
        .read_stream(&StreamName::new(stream).unwrap(), ReadStream::forward(100))
        .await
        .expect("read");
    s.events
        .iter()
        .map(|e| {
            TraceContext::from_metadata(&e.metadata)
                .expect("a stored context is valid")
                .expect("every event appended over HTTP stores a context")
        })
        .collect()
}

#[tokio::test]
async fn the_requests_traceparent_is_stored_in_each_event() {
    let s = server();
    let (status, _) = post(
        &s.app,
        "/streams/order-1",
        "application/json",
        &[("traceparent", PARENT), ("tracestate", "vendor=x")],
        r#"[{"type":"a","data":1},{"type":"b","data":2}]"#.into(),
    )
    .await;
    assert_eq!(status, 201);
    let ctx = stored(&s.store, "order-1").await;
    assert_eq!(ctx.len(), 2);
    for c in &ctx {
        // Same trace; the parent is the header's span, or the server's `send` span when another
        // test of this binary turned tracing on.
        assert_eq!(c.parent.trace_id_hex(), TRACE_ID);
        assert_eq!(c.state.as_ref().map(|s| s.as_str()), Some("vendor=x"));
    }
}

#[tokio::test]
async fn a_cloudevent_batch_and_a_pipelined_append_carry_the_context_too() {
    let s = server();
    let own = "00-11111111111111111111111111111111-2222222222222222-01";
    let batch = format!(
        r#"[{{"specversion":"1.0","id":"a","source":"s","type":"t","traceparent":"{own}"}},{{"specversion":"1.0","id":"b","source":"s","type":"t"}}]"#
    );
    let (status, _) = post(
        &s.app,
        "/streams/ce-1",
        "application/cloudevents-batch+json",
        &[("traceparent", PARENT)],
        batch,
    )
    .await;
    assert_eq!(status, 201);
    let ctx = stored(&s.store, "ce-1").await;
    // The event's own (CloudEvents distributed-tracing extension) context is kept.
    assert_eq!(ctx[0].parent.to_string(), own);
    assert_eq!(ctx[1].parent.trace_id_hex(), TRACE_ID);

    let (status, answer) = post(
        &s.app,
        "/appends",
        "application/x-ndjson",
        &[("traceparent", PARENT)],
        "{\"stream\":\"pipe-1\",\"events\":[{\"type\":\"t\",\"data\":1}]}\n".into(),
    )
    .await;
    assert_eq!(
        (status, answer["appended"]["stream"].as_str()),
        (200, Some("pipe-1"))
    );
    assert_eq!(
        stored(&s.store, "pipe-1").await[0].parent.trace_id_hex(),
        TRACE_ID
    );
}

#[tokio::test]
async fn without_a_traceparent_the_server_stores_one() {
    let s = server();
    for stream in ["plain-1", "plain-2"] {
        let (status, _) = post(
            &s.app,
            &format!("/streams/{stream}"),
            "application/json",
            &[],
            r#"[{"type":"a","data":1}]"#.into(),
        )
        .await;
        assert_eq!(status, 201);
    }
    let a = stored(&s.store, "plain-1").await;
    let b = stored(&s.store, "plain-2").await;
    assert_ne!(
        a[0].parent.trace_id(),
        b[0].parent.trace_id(),
        "each append starts its own trace"
    );
}

#[tokio::test]
async fn a_malformed_trace_context_is_refused_naming_it() {
    let s = server();
    for (headers, body, what) in [
        (
            vec![("traceparent", "00-zz")],
            r#"[{"type":"a","data":1}]"#,
            ("header", "traceparent"),
        ),
        (
            vec![("traceparent", PARENT), ("tracestate", "NOT VALID")],
            r#"[{"type":"a","data":1}]"#,
            ("header", "tracestate"),
        ),
        (
            vec![],
            r#"[{"type":"a","data":1,"metadata":{"traceparent":"x"}}]"#,
            ("field", "metadata.traceparent"),
        ),
    ] {
        let (status, body) = post(
            &s.app,
            "/streams/bad-1",
            "application/json",
            &headers,
            body.into(),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_trace_context");
        assert_eq!(body["error"][what.0], what.1, "{body}");
    }
    let (status, _) = post(
        &s.app,
        "/appends",
        "application/x-ndjson",
        &[("traceparent", "nope")],
        "{\"stream\":\"bad-1\",\"events\":[{\"type\":\"t\",\"data\":1}]}\n".into(),
    )
    .await;
    assert_eq!(status, 400);
    let none = s
        .store
        .read_stream(&StreamName::new("bad-1").unwrap(), ReadStream::forward(100))
        .await;
    assert!(
        none.is_err() || none.unwrap().events.is_empty(),
        "nothing was appended"
    );
}

fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        eventfold_trace::install(provider);
        exporter
    })
}

#[tokio::test]
async fn an_append_is_a_producer_span_whose_context_the_events_store() {
    let exporter = exporter();
    let s = server();
    let (status, _) = post(
        &s.app,
        "/streams/traced-1",
        "application/json",
        &[("traceparent", PARENT)],
        r#"[{"type":"a","data":1},{"type":"b","data":2}]"#.into(),
    )
    .await;
    assert_eq!(status, 201);
    let trace_id = TraceId::from_hex(TRACE_ID).unwrap();
    let spans: Vec<_> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace_id && s.name == "send")
        .filter(|s| {
            s.attributes.iter().any(|kv| {
                kv.key.as_str() == "messaging.destination.name" && kv.value.as_str() == "traced-1"
            })
        })
        .collect();
    assert_eq!(spans.len(), 1, "one producer span per append request");
    let span = &spans[0];
    assert_eq!(span.span_kind, SpanKind::Producer);
    assert_eq!(
        span.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.as_str().into_owned())
    };
    assert_eq!(attr("messaging.system").as_deref(), Some("eventfold"));
    assert_eq!(attr("messaging.operation.type").as_deref(), Some("send"));
    assert_eq!(attr("messaging.batch.message_count").as_deref(), Some("2"));
    // The events store the producer span's context: consumers link to the append.
    for c in stored(&s.store, "traced-1").await {
        assert_eq!(c.parent.parent_id(), span.span_context.span_id().to_bytes());
    }
}
