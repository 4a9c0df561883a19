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

/// A server with consumer groups.
async fn groups_server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn EventStore> = Arc::new(
        Engine::open(dir.path().join("events"), EngineOptions::for_tests()).expect("engine"),
    );
    let state: Arc<dyn EventStore> = Arc::new(
        Engine::open(dir.path().join("groups"), EngineOptions::for_tests()).expect("engine"),
    );
    let groups = eventfold_groups::Groups::open(store.clone(), state)
        .await
        .expect("groups");
    Server {
        app: eventfold_server::router(
            AppState::new(store.clone(), ServerLimits::default()).with_groups(groups),
        ),
        store,
        _dir: dir,
    }
}

/// Every finished span named `name` in the trace of `ctx` or linked to it.
fn spans_about(name: &str, ctx: &TraceContext) -> Vec<opentelemetry_sdk::trace::SpanData> {
    let trace = TraceId::from_bytes(ctx.parent.trace_id());
    let span = SpanId::from_bytes(ctx.parent.parent_id());
    exporter()
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            (s.span_context.trace_id() == trace && s.parent_span_id == span)
                || s.links
                    .iter()
                    .any(|l| l.span_context.trace_id() == trace && l.span_context.span_id() == span)
        })
        .collect()
}

/// Breaking it: a settle span made as a root (no parent, no links), or one that links to the
/// wrong events, is not found about the events' stored contexts.
#[tokio::test]
async fn acks_and_nacks_are_settle_spans_about_the_delivered_events() {
    let _ = exporter();
    let s = groups_server().await;
    let parent_b = "00-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-00f067aa0ba902b7-01";
    let (status, _) = post(
        &s.app,
        "/streams/settle-a",
        "application/json",
        &[("traceparent", PARENT)],
        r#"[{"type":"a","data":1},{"type":"a","data":2}]"#.into(),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = post(
        &s.app,
        "/streams/settle-b",
        "application/json",
        &[("traceparent", parent_b)],
        r#"[{"type":"b","data":3}]"#.into(),
    )
    .await;
    assert_eq!(status, 201);
    let a = stored(&s.store, "settle-a").await;
    let b = stored(&s.store, "settle-b").await;

    let put = Request::put("/subscriptions/settlers")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"start":"start","filter":{"stream_prefix":"settle-"}}"#,
        ))
        .unwrap();
    let status = s.app.clone().oneshot(put).await.unwrap().status();
    assert_eq!(status.as_u16(), 201);
    let (status, pulled) = post(
        &s.app,
        "/subscriptions/settlers/pull",
        "application/json",
        &[],
        r#"{"consumer":"c","max":3,"wait_ms":5000}"#.into(),
    )
    .await;
    assert_eq!(status, 200, "{pulled}");
    let ids = |stream: &str| -> Vec<String> {
        pulled["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["event"]["stream"] == stream)
            .map(|d| d["delivery_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (ids_a, ids_b) = (ids("settle-a"), ids("settle-b"));
    assert_eq!((ids_a.len(), ids_b.len()), (2, 1), "{pulled}");

    // The ack of a's two events links to both their contexts.
    let (status, _) = post(
        &s.app,
        "/subscriptions/settlers/ack",
        "application/json",
        &[],
        serde_json::json!({ "delivery_ids": ids_a }).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    for c in &a {
        let found = spans_about("settle settlers", c);
        assert_eq!(found.len(), 1, "one ack span about {c:?}");
        assert_eq!(found[0].span_kind, SpanKind::Client);
        assert_eq!(found[0].links.len(), 2, "{:#?}", found[0]);
    }
    // The nack of b's one event is the child of its context.
    let (status, _) = post(
        &s.app,
        "/subscriptions/settlers/nack",
        "application/json",
        &[],
        serde_json::json!({ "delivery_ids": ids_b, "action": "park", "reason": "no" }).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    let nack = spans_about("settle settlers", &b[0]);
    assert_eq!(nack.len(), 1);
    assert_eq!(
        nack[0].span_context.trace_id(),
        TraceId::from_bytes(b[0].parent.trace_id()),
        "a settlement of one event is in its trace"
    );
    let op = nack[0]
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "messaging.operation.name")
        .map(|kv| kv.value.as_str().into_owned());
    assert_eq!(op.as_deref(), Some("nack"));
}

/// Reads `uri` as a subscription (`accept`) until `until` holds for what arrived, then drops it.
async fn subscribe_until(
    app: &axum::Router,
    uri: &str,
    accept: &str,
    until: impl Fn(&str) -> bool,
) {
    use http_body_util::BodyExt as _;
    let req = Request::get(uri)
        .header("accept", accept)
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert!(resp.status().is_success(), "{uri}: {}", resp.status());
    let mut body = resp.into_body();
    let mut seen = String::new();
    while !until(&seen) {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(20), body.frame())
            .await
            .expect("a chunk within 20 s")
            .expect("the subscription goes on")
            .expect("a chunk");
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

/// Breaking it: a `receive subscription` span made without the events' contexts (a root), or
/// not made at all, is not found about them.
#[tokio::test]
async fn subscription_deliveries_are_consumer_spans_about_the_events() {
    let _ = exporter();
    let s = server();
    let one = "00-cccccccccccccccccccccccccccccccc-00f067aa0ba902b7-01";
    let (status, _) = post(
        &s.app,
        "/streams/sub-one",
        "application/json",
        &[("traceparent", one)],
        r#"[{"type":"a","data":1}]"#.into(),
    )
    .await;
    assert_eq!(status, 201);
    // Two events, each with its own context.
    let (status, _) = post(
        &s.app,
        "/streams/sub-two",
        "application/json",
        &[],
        r#"[{"type":"a","data":1,"metadata":{"traceparent":"00-dddddddddddddddddddddddddddddddd-00f067aa0ba902b7-01"}},
            {"type":"a","data":2,"metadata":{"traceparent":"00-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-00f067aa0ba902b7-01"}}]"#
            .into(),
    )
    .await;
    assert_eq!(status, 201);

    // NDJSON: the delivery of the one event is a consumer span, the child of its context.
    subscribe_until(
        &s.app,
        "/streams/sub-one/subscribe?from=start",
        "application/x-ndjson",
        |seen| seen.contains("sub-one"),
    )
    .await;
    let c = &stored(&s.store, "sub-one").await[0];
    let found = spans_about("receive subscription", c);
    assert_eq!(found.len(), 1, "one delivery span about {c:?}");
    assert_eq!(found[0].span_kind, SpanKind::Consumer);
    assert_eq!(
        found[0].span_context.trace_id(),
        TraceId::from_bytes(c.parent.trace_id())
    );

    // SSE: each event's delivery is about its context (linked, when a chunk holds both).
    subscribe_until(
        &s.app,
        "/streams/sub-two/subscribe?from=start",
        "text/event-stream",
        |seen| seen.matches("data: ").count() >= 2,
    )
    .await;
    for c in stored(&s.store, "sub-two").await {
        let found = spans_about("receive subscription", &c);
        assert_eq!(found.len(), 1, "one delivery span about {c:?}");
        assert_eq!(found[0].span_kind, SpanKind::Consumer);
    }
}

/// A traceparent with a multi-byte character across byte 55 (where the version-00 fields end)
/// is refused like any malformed one, in the header and in an event's metadata. It panicked in
/// the parser before (found by the `headers` fuzz target, fuzz/corpus/headers/).
#[tokio::test]
async fn a_traceparent_with_a_multibyte_character_at_its_end_is_refused_not_a_panic() {
    let s = server();
    let torn = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{4da}";
    let (status, body) = post(
        &s.app,
        "/streams/fuzz-1",
        "application/json",
        &[("traceparent", torn)],
        r#"[{"type":"t","data":1}]"#.into(),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &serde_json::json!("invalid_trace_context"))
    );
    let (status, body) = post(
        &s.app,
        "/streams/fuzz-1",
        "application/json",
        &[],
        format!(r#"[{{"type":"t","data":1,"metadata":{{"traceparent":"{torn}"}}}}]"#),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &serde_json::json!("invalid_trace_context"))
    );
}
