//! Every endpoint of the contract, over HTTP, against a real server process.

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::server::{Server, client, send};

fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &["--durability", "none", "--heartbeat-secs", "1"],
    );
    (dir, server)
}

#[tokio::test]
async fn append_read_info_list_metadata_delete() {
    let (_dir, s) = start();
    let c = client();
    let u = &s.url;
    let id = "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d";
    let body = json!([{"id": id, "type": "order.placed", "data": {"total": 99.99}, "metadata": {"correlation_id": "req_1"}}]);
    let (st, v) = send(
        c.post(format!("{u}/streams/order-1"))
            .header("Expected-Revision", "no-stream")
            .json(&body),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        v,
        json!({"stream": "order-1", "first_revision": 0, "last_revision": 0, "first_position": 0, "last_position": 0})
    );
    // Idempotent retry: 200, same result, nothing written.
    let (st, v2) = send(
        c.post(format!("{u}/streams/order-1"))
            .header("Expected-Revision", "no-stream")
            .json(&body),
    )
    .await;
    assert_eq!((st, &v2), (200, &v));
    // Conflict.
    let (st, v) = send(
        c.post(format!("{u}/streams/order-1"))
            .header("Expected-Revision", "no-stream")
            .json(&json!([{"type": "x", "data": 1}])),
    )
    .await;
    assert_eq!(st, 409);
    assert_eq!(v["error"]["code"], "wrong_expected_revision");
    assert_eq!(v["error"]["actual"], 0);
    // Binary data and a batch.
    let (st, _) = send(
        c.post(format!("{u}/streams/order-1"))
            .header("Expected-Revision", "0")
            .json(&json!([
                {"type": "blob", "content_type": "application/octet-stream", "data_base64": "AAEC"},
                {"type": "order.paid", "data": {"ok": true}, "schema_version": 2}
            ])),
    )
    .await;
    assert_eq!(st, 201);
    let (st, v) = send(c.get(format!("{u}/streams/order-1"))).await;
    assert_eq!(st, 200);
    let evs = v["events"].as_array().expect("events");
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[0]["id"], id);
    assert_eq!(evs[0]["data"]["total"], 99.99);
    assert_eq!(evs[0]["metadata"]["correlation_id"], "req_1");
    assert_eq!(evs[1]["data_base64"], "AAEC");
    assert!(evs[1].get("data").is_none());
    assert_eq!(evs[2]["schema_version"], 2);
    assert_eq!(v["next"], Value::Null);
    let ts = evs[0]["timestamp"].as_str().expect("timestamp");
    assert!(ts.ends_with('Z') && ts.len() == 27, "{ts}");
    // Backward with a limit and paging.
    let (_, v) = send(c.get(format!("{u}/streams/order-1?direction=backward&limit=2"))).await;
    assert_eq!(
        v["events"]
            .as_array()
            .map(|a| a.iter().map(|e| e["revision"].as_u64()).collect::<Vec<_>>()),
        Some(vec![Some(2), Some(1)])
    );
    assert_eq!(v["next"], 0);
    // NDJSON.
    let text = c
        .get(format!("{u}/streams/order-1?limit=2"))
        .header("Accept", "application/x-ndjson")
        .send()
        .await
        .expect("ndjson")
        .text()
        .await
        .expect("text");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["revision"], 1);
    // Info and listing.
    let (st, v) = send(c.get(format!("{u}/streams/order-1/info"))).await;
    assert_eq!(st, 200);
    assert_eq!(
        (v["last_revision"].as_u64(), v["event_count"].as_u64()),
        (Some(2), Some(3))
    );
    send(
        c.post(format!("{u}/streams/order-2"))
            .json(&json!([{"type": "a", "data": 1}])),
    )
    .await;
    send(
        c.post(format!("{u}/streams/user-1"))
            .json(&json!([{"type": "a", "data": 1}])),
    )
    .await;
    let (_, v) = send(c.get(format!("{u}/streams?prefix=order-&limit=1"))).await;
    assert_eq!(v, json!({"streams": ["order-1"], "next": "order-1"}));
    let (_, v) = send(c.get(format!("{u}/streams?prefix=order-&after=order-1"))).await;
    assert_eq!(v, json!({"streams": ["order-2"], "next": null}));
    // $all with filters.
    let (_, v) = send(c.get(format!(
        "{u}/all?category=order&type=order.paid,order.placed"
    )))
    .await;
    assert_eq!(v["events"].as_array().map(Vec::len), Some(2));
    let (_, v) = send(c.get(format!("{u}/all?from=end&limit=1"))).await;
    assert_eq!(v["events"][0]["stream"], "user-1");
    // Metadata.
    let (st, v) = send(
        c.put(format!("{u}/streams/order-1/metadata"))
            .json(&json!({"max_count": 1, "custom": {"owner": "billing"}})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (_, v) = send(c.get(format!("{u}/streams/order-1/metadata"))).await;
    assert_eq!(v, json!({"max_count": 1, "custom": {"owner": "billing"}}));
    let (_, v) = send(c.get(format!("{u}/streams/order-1"))).await;
    assert_eq!(v["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["events"][0]["revision"], 2);
    // Soft delete, then re-append continues the revisions.
    let (st, _) = send(c.delete(format!("{u}/streams/order-2"))).await;
    assert_eq!(st, 204);
    let (st, v) = send(c.get(format!("{u}/streams/order-2"))).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("stream_not_found"))
    );
    let (st, v) = send(
        c.post(format!("{u}/streams/order-2"))
            .header("Expected-Revision", "no-stream")
            .json(&json!([{"type": "a", "data": 2}])),
    )
    .await;
    assert_eq!((st, v["first_revision"].as_u64()), (201, Some(1)));
    // Hard delete.
    let (st, _) = send(c.delete(format!("{u}/streams/user-1?hard=true"))).await;
    assert_eq!(st, 204);
    for rb in [
        c.get(format!("{u}/streams/user-1")),
        c.post(format!("{u}/streams/user-1"))
            .json(&json!([{"type": "a", "data": 1}])),
    ] {
        let (st, v) = send(rb).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (410, Some("stream_deleted"))
        );
    }
    // Health.
    assert_eq!(send(c.get(format!("{u}/health/live"))).await.0, 200);
    assert_eq!(send(c.get(format!("{u}/health/ready"))).await.0, 200);
    // A clean stop: SIGTERM, exit 0.
    assert!(s.terminate().success());
}

#[tokio::test]
async fn cloudevents_structured_and_batch() {
    let (_dir, s) = start();
    let c = client();
    let u = &s.url;
    let ce = json!({"specversion": "1.0", "id": "evt-1", "source": "/orders", "type": "order.placed", "time": "2026-11-22T10:00:00Z", "subject": "o-1", "tenant": "acme", "data": {"x": 1}});
    let (st, v) = send(
        c.post(format!("{u}/streams/ce-1"))
            .header("Content-Type", "application/cloudevents+json")
            .body(ce.to_string()),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let batch = json!([
        {"specversion": "1.0", "id": "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d", "source": "/o", "type": "t", "datacontenttype": "text/plain", "data": "hello"},
        {"specversion": "1.0", "id": "e3", "source": "/o", "type": "t", "data_base64": "AAE=", "datacontenttype": "application/octet-stream"}
    ]);
    let (st, _) = send(
        c.post(format!("{u}/streams/ce-1"))
            .header("Content-Type", "application/cloudevents-batch+json")
            .body(batch.to_string()),
    )
    .await;
    assert_eq!(st, 201);
    let (_, v) = send(c.get(format!("{u}/streams/ce-1"))).await;
    let mut e = v["events"].clone();
    // The server stores a W3C trace context in every event that came without one.
    let traceparent = e[0]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("traceparent")
        .expect("a traceparent is stored");
    assert!(
        traceparent
            .as_str()
            .unwrap()
            .parse::<eventfold_core::TraceParent>()
            .is_ok()
    );
    assert_eq!(
        e[0]["metadata"],
        json!({"ce_id": "evt-1", "source": "/orders", "ce_time": "2026-11-22T10:00:00Z", "subject": "o-1", "tenant": "acme"})
    );
    assert_eq!(e[1]["id"], "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d");
    assert_eq!(e[1]["data_base64"], "aGVsbG8=");
    assert_eq!(e[2]["data_base64"], "AAE=");
}

/// Every bad request gets the right status and code, and the server stays healthy.
#[tokio::test]
async fn bad_inputs_get_clear_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(
        dir.path(),
        &[
            "--durability",
            "none",
            "--event-bytes-max",
            "1000",
            "--batch-events-max",
            "5",
            "--batch-bytes-max",
            "3000",
            "--read-limit-max",
            "50",
        ],
    );
    let c = client();
    let u = &s.url;
    send(
        c.post(format!("{u}/streams/ok-1"))
            .json(&json!([{"type": "a", "data": 1}])),
    )
    .await;
    let long = "x".repeat(300);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.post(format!("{u}/streams/s-1"))
                .header("Content-Type", "application/json")
                .body("[{\"type\":\"a\",\"data\":1"),
            400,
            "invalid_json",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .header("Content-Type", "application/json")
                .body("not json"),
            400,
            "invalid_json",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .json(&json!({"type": "a", "data": 1})),
            400,
            "invalid_json",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .json(&json!([{"type": 7, "data": 1}])),
            400,
            "invalid_json",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .json(&json!([{"type": "a", "data": 1, "schema_version": "two"}])),
            400,
            "invalid_json",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .json(&json!([{"type": "a", "data": 1, "metadata": [1]}])),
            400,
            "invalid_json",
        ),
        (
            c.post(format!("{u}/streams/s-1")).json(&json!([])),
            400,
            "empty_batch",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .json(&json!([{"type": "a"}])),
            400,
            "invalid_event",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .json(&json!([{"type": "", "data": 1}])),
            400,
            "invalid_event_type",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .json(&json!([{"type": long, "data": 1}])),
            400,
            "invalid_event_type",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .json(&json!([{"type": "a", "data": 1, "id": "not-a-uuid"}])),
            400,
            "invalid_event_id",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .json(&json!([{"type": "a", "data": "x".repeat(2000)}])),
            413,
            "event_too_large",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .json(&Value::Array(vec![json!({"type": "a", "data": 1}); 6])),
            413,
            "batch_too_many_events",
        ),
        (
            c.post(format!("{u}/streams/s-1")).json(&Value::Array(vec![
                json!({"type": "a", "data": "x".repeat(900)});
                4
            ])),
            413,
            "batch_too_large",
        ),
        (
            c.post(format!("{u}/streams/$all"))
                .json(&json!([{"type": "a", "data": 1}])),
            400,
            "invalid_stream_name",
        ),
        (
            c.post(format!("{u}/streams/{long}"))
                .json(&json!([{"type": "a", "data": 1}])),
            400,
            "invalid_stream_name",
        ),
        (
            c.post(format!("{u}/streams/a%0Ab"))
                .json(&json!([{"type": "a", "data": 1}])),
            400,
            "invalid_stream_name",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .header("Expected-Revision", "-1")
                .json(&json!([{"type": "a", "data": 1}])),
            400,
            "invalid_expected_revision",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .header("Expected-Revision", "latest")
                .json(&json!([{"type": "a", "data": 1}])),
            400,
            "invalid_expected_revision",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .header("Content-Type", "text/csv")
                .body("a,b"),
            415,
            "unsupported_media_type",
        ),
        (
            c.post(format!("{u}/streams/s-1"))
                .header("Content-Type", "application/cloudevents+json")
                .body("{\"id\":\"1\"}"),
            400,
            "invalid_cloudevent",
        ),
        (
            c.get(format!("{u}/streams/ok-1?limit=lots")),
            400,
            "invalid_query",
        ),
        (
            c.get(format!("{u}/streams/ok-1?limit=51")),
            400,
            "read_limit_too_large",
        ),
        (
            c.get(format!("{u}/streams/ok-1?from=yesterday")),
            400,
            "invalid_query",
        ),
        (
            c.get(format!("{u}/streams/ok-1?colour=red")),
            400,
            "invalid_query",
        ),
        (
            c.get(format!("{u}/all?direction=sideways")),
            400,
            "invalid_query",
        ),
        (
            c.get(format!("{u}/all?limit=51"))
                .header("Accept", "application/x-ndjson"),
            400,
            "read_limit_too_large",
        ),
        (
            c.get(format!("{u}/streams/missing-1")),
            404,
            "stream_not_found",
        ),
        (
            c.get(format!("{u}/streams/missing-1/info")),
            404,
            "stream_not_found",
        ),
        (
            c.delete(format!("{u}/streams/missing-1")),
            404,
            "stream_not_found",
        ),
        (
            c.delete(format!("{u}/streams/ok-1?hard=maybe")),
            400,
            "invalid_query",
        ),
        (
            c.put(format!("{u}/streams/ok-1/metadata"))
                .json(&json!({"max_count": "ten"})),
            400,
            "invalid_metadata",
        ),
        (
            c.put(format!("{u}/streams/ok-1/metadata"))
                .json(&json!({"maxcount": 1})),
            400,
            "invalid_metadata",
        ),
        (
            c.get(format!("{u}/streams/ok-1/subscribe"))
                .header("Last-Event-ID", "abc"),
            400,
            "invalid_last_event_id",
        ),
        (c.get(format!("{u}/no/such/route")), 404, "not_found"),
        (
            c.patch(format!("{u}/streams/ok-1")),
            405,
            "method_not_allowed",
        ),
        (c.put(format!("{u}/all")), 405, "method_not_allowed"),
    ];
    for (i, (rb, status, code)) in cases.into_iter().enumerate() {
        let (st, v) = send(rb).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (status, Some(code)),
            "case {i}: {v}"
        );
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.len() > 10,
            "case {i}: the message should say what to do: {v}"
        );
    }
    // A body announced larger than any batch is refused from its headers alone.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let addr = u.trim_start_matches("http://");
        let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "POST /streams/s-1 HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n["
        );
        sock.write_all(req.as_bytes()).await.expect("write");
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut answer))
            .await
            .expect("answer in time")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("body_too_large"), "{answer}");
    }
    // Nothing refused was written, and the server is healthy.
    let (st, _) = send(c.get(format!("{u}/streams/s-1"))).await;
    assert_eq!(st, 404);
    assert_eq!(send(c.get(format!("{u}/health/ready"))).await.0, 200);
    let (st, v) = send(c.get(format!("{u}/streams/ok-1"))).await;
    assert_eq!((st, v["events"].as_array().map(Vec::len)), (200, Some(1)));
}

/// Reads SSE frames (`id`, `event`, `data`) from a response body until `n` events arrived.
async fn sse_events(resp: reqwest::Response, n: usize) -> Vec<(u64, String, Value)> {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("an SSE frame within 20 s")
            .expect("stream open")
            .expect("chunk");
        buf.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let (mut id, mut ev, mut data) = (None, String::new(), Value::Null);
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    ev = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).expect("data is JSON");
                }
            }
            if let Some(id) = id {
                out.push((id, ev, data));
            }
        }
    }
    out
}

#[tokio::test]
async fn sse_catches_up_then_goes_live_with_no_gap_and_resumes() {
    let (_dir, s) = start();
    let c = client();
    let u = s.url.clone();
    for i in 0..50 {
        send(
            c.post(format!("{u}/streams/feed-{}", i % 3))
                .json(&json!([{"type": "tick", "data": i}])),
        )
        .await;
    }
    let resp = c
        .get(format!("{u}/all/subscribe?from=start"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .expect("subscribe");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    // Live appends race with the catch-up.
    let writer = {
        let c = c.clone();
        let u = u.clone();
        tokio::spawn(async move {
            for i in 50..250 {
                send(
                    c.post(format!("{u}/streams/feed-{}", i % 3))
                        .json(&json!([{"type": "tick", "data": i}])),
                )
                .await;
            }
        })
    };
    let got = sse_events(resp, 250).await;
    writer.await.expect("writer");
    let positions: Vec<u64> = got.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(
        positions,
        (0..250).collect::<Vec<u64>>(),
        "no gap, no duplicate, in order"
    );
    assert!(
        got.iter()
            .all(|(_, ev, d)| ev == "tick" && d["type"] == "tick")
    );
    // Resume after id 199 with Last-Event-ID: starts at 200.
    let resp = c
        .get(format!("{u}/all/subscribe?from=start"))
        .header("Last-Event-ID", "199")
        .send()
        .await
        .expect("resume");
    let got = sse_events(resp, 50).await;
    assert_eq!(got.first().map(|g| g.0), Some(200));
    // A stream subscription uses revisions as ids.
    let resp = c
        .get(format!("{u}/streams/feed-1/subscribe?from=3"))
        .send()
        .await
        .expect("stream sub");
    let got = sse_events(resp, 2).await;
    assert_eq!((got[0].0, got[1].0), (3, 4));
    assert_eq!(got[0].2["stream"], "feed-1");
}

#[tokio::test]
async fn ndjson_subscription_with_heartbeats_and_a_final_line_on_shutdown() {
    let (_dir, s) = start();
    let c = client();
    let u = s.url.clone();
    let resp = c
        .get(format!("{u}/streams/hb-1/subscribe"))
        .header("Accept", "application/x-ndjson")
        .send()
        .await
        .expect("subscribe");
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut body = resp.bytes_stream();
    // Idle: heartbeats (empty lines) arrive every second (--heartbeat-secs 1).
    let first = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("heartbeat")
        .expect("open")
        .expect("chunk");
    assert_eq!(&first[..], b"\n");
    send(
        c.post(format!("{u}/streams/hb-1"))
            .json(&json!([{"type": "a", "data": 1}])),
    )
    .await;
    let mut text = String::new();
    while !text.contains("\"revision\":0") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("event")
            .expect("open")
            .expect("chunk");
        text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    // SIGTERM: the subscription ends with a final line and the process exits 0.
    let stop = tokio::task::spawn_blocking(move || s.terminate());
    let mut rest = String::new();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(10), body.next()).await
    {
        rest.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    assert!(
        rest.contains("\"closing\"") && rest.contains("server_shutdown"),
        "final line missing: {rest:?}"
    );
    assert!(stop.await.expect("join").success());
}

#[tokio::test]
async fn tokens_gate_every_route_but_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        r#"
[[tokens]]
token = "orders-reader-0001"
prefixes = ["order-"]
rights = ["read"]

[[tokens]]
token = "orders-writer-0001"
prefixes = ["order-"]
rights = ["read", "write"]
"#,
    )
    .expect("write tokens file");
    let data = dir.path().join("data");
    let s = Server::start(
        &data,
        &[
            "--durability",
            "none",
            "--auth-token",
            "root-token-0001",
            "--tokens-file",
            tokens.to_str().expect("utf-8"),
        ],
    );
    let c = client();
    let u = &s.url;
    let body = json!([{"type": "a", "data": 1}]);
    assert_eq!(send(c.get(format!("{u}/health/live"))).await.0, 200);
    assert_eq!(send(c.get(format!("{u}/health/ready"))).await.0, 200);
    let (st, v) = send(c.get(format!("{u}/streams/order-1"))).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (st, _) = send(c.get(format!("{u}/metrics")).bearer_auth("nope-nope-nope")).await;
    assert_eq!(st, 401);
    let (st, _) = send(
        c.post(format!("{u}/streams/order-1"))
            .bearer_auth("orders-writer-0001")
            .json(&body),
    )
    .await;
    assert_eq!(st, 201);
    let (st, v) = send(
        c.post(format!("{u}/streams/user-1"))
            .bearer_auth("orders-writer-0001")
            .json(&body),
    )
    .await;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")));
    let (st, v) = send(
        c.post(format!("{u}/streams/order-1"))
            .bearer_auth("orders-reader-0001")
            .json(&body),
    )
    .await;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(
        send(
            c.get(format!("{u}/streams/order-1"))
                .bearer_auth("orders-reader-0001")
        )
        .await
        .0,
        200
    );
    assert_eq!(
        send(c.get(format!("{u}/all")).bearer_auth("orders-reader-0001"))
            .await
            .0,
        403
    );
    assert_eq!(
        send(
            c.get(format!("{u}/all?stream_prefix=order-"))
                .bearer_auth("orders-reader-0001")
        )
        .await
        .0,
        200
    );
    assert_eq!(
        send(
            c.delete(format!("{u}/streams/order-1"))
                .bearer_auth("orders-writer-0001")
        )
        .await
        .0,
        403
    );
    assert_eq!(
        send(
            c.delete(format!("{u}/streams/order-1"))
                .bearer_auth("root-token-0001")
        )
        .await
        .0,
        204
    );
    // The client crate passes its token.
    let client = eventfold_client::Client::new(u, Some("root-token-0001".into())).expect("client");
    use eventfold_core::EventStore as _;
    assert!(
        client
            .list_streams(eventfold_core::ListStreams {
                limit: 10,
                ..Default::default()
            })
            .await
            .is_ok()
    );
    let anonymous = eventfold_client::Client::new(u, None).expect("client");
    let err = anonymous
        .list_streams(eventfold_core::ListStreams {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect_err("401");
    assert_eq!(err.code(), "unauthenticated");
}

#[tokio::test]
async fn metrics_are_exposed_from_start_up_and_count() {
    let (_dir, s) = start();
    let c = client();
    let u = &s.url;
    let text = c
        .get(format!("{u}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    // Families labelled by event type appear with their first event.
    for name in [
        "eventfold_append_duration_seconds_count 0",
        "eventfold_events_read_total 0",
        "eventfold_subscriptions_active 0",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    send(
        c.post(format!("{u}/streams/m-1"))
            .json(&json!([{"type": "a", "data": 1}, {"type": "a", "data": 2}])),
    )
    .await;
    send(
        c.post(format!("{u}/streams/m-1"))
            .header("Expected-Revision", "no-stream")
            .json(&json!([{"type": "a", "data": 3}])),
    )
    .await;
    send(c.get(format!("{u}/streams/m-1"))).await;
    let text = c
        .get(format!("{u}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "eventfold_events_appended_total{type=\"a\"} 2",
        "eventfold_append_duration_seconds_count 2",
        "eventfold_events_read_total 2",
        "eventfold_events_failed_total{type=\"a\"} 1",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
}

/// The server's resident memory in KiB.
fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// Subscribers that stop reading hold the server to one page each, not to the whole log: 100 MB
/// appended under four stalled SSE readers grows the server by far less than one copy of it,
/// and a stalled reader that resumes still gets every event, in order, with no gap.
#[tokio::test]
async fn stalled_sse_readers_do_not_grow_server_memory() {
    const EVENTS: u64 = 25_000;
    const WARM_EVENTS: u64 = 5_000;
    const BATCH: u64 = 100;
    let (_dir, server) = start();
    let u = server.url.clone();
    let c = client();
    let pad = "x".repeat(4_000);
    let batch: Vec<Value> = (0..BATCH)
        .map(|i| json!({ "type": "big", "data": { "i": i, "pad": pad } }))
        .collect();
    let body = serde_json::to_vec(&batch).expect("json");
    let append = |stream: &'static str| {
        let (c, u, body) = (c.clone(), u.clone(), body.clone());
        async move {
            let r = c
                .post(format!("{u}/streams/{stream}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("append");
            assert_eq!(r.status(), 201);
        }
    };
    // Warm up with the same appends before the baseline: the allocator keeps what the append
    // path freed (mimalloc holds freed pages for reuse; about 20 MiB after 100 MB of these
    // appends with no reader at all), which is not what this test is about.
    for _ in 0..WARM_EVENTS / BATCH {
        append("warm-1").await;
    }

    // Four subscribers that read the response headers and then nothing.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let resp = reqwest::Client::new()
            .get(format!("{u}/all/subscribe?from=start"))
            .send()
            .await
            .expect("subscribe");
        assert_eq!(resp.status(), 200);
        stalled.push(resp);
    }
    let before = rss_kib(&server);
    for _ in 0..EVENTS / BATCH {
        append("big-1").await;
    }
    let after = rss_kib(&server);
    let grown_mib = after.saturating_sub(before) / 1024;
    println!("the server grew by {grown_mib} MiB ({before} → {after} KiB) under stalled readers");
    // 100 MB went by; buffering it per stalled reader would be 400 MB.
    assert!(
        grown_mib < 48,
        "the server grew by {grown_mib} MiB ({before} → {after} KiB) under stalled readers"
    );

    // One stalled reader resumes and gets everything, in order, no gap, no duplicate.
    let resp = stalled.pop().expect("a stalled reader");
    let got = sse_events(resp, (WARM_EVENTS + EVENTS) as usize).await;
    for (i, (pos, _, _)) in got.iter().enumerate() {
        assert_eq!(*pos, i as u64, "position {i} after a stall");
    }
    drop(stalled);
    assert_eq!(send(c.get(format!("{u}/health/ready"))).await.0, 200);
}

/// JSON data comes back as it was sent: key order, big numbers and trailing zeros kept, only
/// the whitespace between tokens removed (so an event is always one NDJSON or SSE line).
#[tokio::test]
async fn json_data_is_returned_as_sent() {
    let (_dir, server) = start();
    let u = &server.url;
    let c = client();
    let body = "[{\"type\":\"t\",\"data\": {\"b\": 1,\n \"a\": [2, 3],\n \"n\": 12345678901234567890123, \"f\": 1.10, \"s\": \"two  spaces\"}}]";
    let r = c
        .post(format!("{u}/streams/raw-1"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("append");
    assert_eq!(r.status(), 201);
    let want = r#""data":{"b":1,"a":[2,3],"n":12345678901234567890123,"f":1.10,"s":"two  spaces"}"#;
    let json = c
        .get(format!("{u}/streams/raw-1"))
        .send()
        .await
        .expect("read")
        .text()
        .await
        .expect("body");
    assert!(json.contains(want), "{json}");
    let ndjson = c
        .get(format!("{u}/all?from=start"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("read")
        .text()
        .await
        .expect("body");
    assert!(ndjson.lines().any(|l| l.contains(want)), "{ndjson}");

    // The Rust client hands a reader (in both shapes) and a subscriber the same bytes.
    use eventfold_core::{EventFilter, EventStore as _, ReadStream, StreamName, SubscribeFrom};
    let want_data = r#"{"b":1,"a":[2,3],"n":12345678901234567890123,"f":1.10,"s":"two  spaces"}"#;
    let client = eventfold_client::Client::new(u, None).expect("client");
    let stream = StreamName::new("raw-1").expect("name");
    let read = client
        .read_stream(&stream, ReadStream::forward(10))
        .await
        .expect("read");
    assert_eq!(std::str::from_utf8(&read.events[0].data), Ok(want_data));
    let page = client
        .read_stream_cloudevents(&stream, ReadStream::forward(10))
        .await
        .expect("read as CloudEvents");
    let ce = page.events[0].json();
    assert!(ce.contains(&format!(r#""data":{want_data}"#)), "{ce}");
    assert_eq!(page.events[0].attribute("type"), Some(json!("t")));
    for mut sub in [
        client.subscribe_stream(&stream, SubscribeFrom::Start),
        client.subscribe_all(SubscribeFrom::Start, EventFilter::default()),
    ] {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the event comes")
            .expect("an event")
            .expect("not an error");
        assert_eq!(std::str::from_utf8(&e.data), Ok(want_data));
    }
}

/// 64 tasks append through one Rust client, so their appends share one `POST /appends`
/// request: every append is answered, with its own stream's revisions, in order. (The benchmark
/// found a deadlock of the pipeline under 64 tasks; this test runs that shape of load, but was
/// not shown to reproduce that deadlock.)
#[tokio::test]
async fn many_tasks_share_one_appends_request_and_every_append_is_answered() {
    use eventfold_core::{EventStore as _, EventType, ExpectedRevision, NewEvent, StreamName};
    let (_dir, server) = start();
    let client = eventfold_client::Client::new(&server.url, None).expect("client");
    const TASKS: u64 = 64;
    const EACH: u64 = 300;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let client = client.clone();
        tasks.spawn(async move {
            let stream = StreamName::new(format!("pipe-{t}")).expect("name");
            let payload = serde_json::json!({ "pad": "x".repeat(200) });
            for i in 0..EACH {
                let r = client
                    .append(
                        &stream,
                        if i == 0 {
                            ExpectedRevision::NoStream
                        } else {
                            ExpectedRevision::Exact(i - 1)
                        },
                        vec![NewEvent::json(EventType::new("t").expect("type"), &payload)],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("task {t}, append {i}: {e}"));
                assert_eq!(r.first_revision.0, i);
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(r) = tasks.join_next().await {
            r.expect("task");
        }
    })
    .await
    .expect("every append is answered within 120 s");
}
