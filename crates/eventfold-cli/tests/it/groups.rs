//! Consumer groups over HTTP against real server processes: every endpoint, the contract's
//! errors, push streams, metrics, and kill -9 during delivery.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::server::{Server, client, send};

pub(crate) async fn append(c: &reqwest::Client, u: &str, stream: &str, n: usize) {
    let batch: Vec<Value> = (0..n)
        .map(|i| json!({"type": "t", "data": {"i": i}}))
        .collect();
    for chunk in batch.chunks(1000) {
        let (st, _) = send(c.post(format!("{u}/streams/{stream}")).json(chunk)).await;
        assert_eq!(st, 201);
    }
}

/// Pulls for `consumer` until `n` deliveries have come (a pull answers as soon as anything is
/// ready, so under load the group's reader may hand out fewer than `n` at first), and returns
/// them as one `{"deliveries": [...]}` answer. Panics when they do not all come within 10 s.
pub(crate) async fn pull_n(
    c: &reqwest::Client,
    u: &str,
    group: &str,
    consumer: &str,
    n: usize,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut all: Vec<Value> = Vec::new();
    while all.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} deliveries came: {all:?}",
            all.len()
        );
        let (st, ds) = send(
            c.post(format!("{u}/subscriptions/{group}/pull"))
                .json(&json!({"consumer": consumer, "max": n - all.len(), "wait_ms": 2000})),
        )
        .await;
        assert_eq!(st, 200, "{ds}");
        all.extend(
            ds["deliveries"]
                .as_array()
                .expect("deliveries")
                .iter()
                .cloned(),
        );
    }
    json!({ "deliveries": all })
}

pub(crate) fn ids(deliveries: &Value) -> Vec<String> {
    deliveries["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["delivery_id"].as_str().expect("id").to_owned())
        .collect()
}

pub(crate) fn positions(deliveries: &Value) -> Vec<u64> {
    deliveries["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["event"]["position"].as_u64().expect("position"))
        .collect()
}

async fn scrape(c: &reqwest::Client, u: &str) -> String {
    c.get(format!("{u}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn every_group_endpoint_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(
        dir.path(),
        &["--durability", "none", "--heartbeat-secs", "1"],
    );
    let (c, u) = (client(), s.url.clone());
    append(&c, &u, "order-1", 10).await;
    append(&c, &u, "user-1", 2).await;

    let cfg = json!({"filter": {"category": "order"}, "start": "start", "ack_timeout_ms": 20000});
    let (st, info) = send(c.put(format!("{u}/subscriptions/g")).json(&cfg)).await;
    assert_eq!(st, 201, "{info}");
    assert_eq!(info["group"], "g");
    assert_eq!(info["max_deliveries"], 10, "contract defaults: {info}");
    let (st, _) = send(c.put(format!("{u}/subscriptions/g")).json(&cfg)).await;
    assert_eq!(st, 200, "a second PUT updates");
    let (st, list) = send(c.get(format!("{u}/subscriptions"))).await;
    assert_eq!(st, 200);
    assert_eq!(list["subscriptions"][0]["group"], "g");

    let ds = pull_n(&c, &u, "g", "c1", 4).await;
    let got = ids(&ds);
    assert_eq!(got.len(), 4);
    assert_eq!(ds["deliveries"][0]["attempt"], 1);
    assert_eq!(ds["deliveries"][0]["event"]["stream"], "order-1");

    let (st, out) = send(
        c.post(format!("{u}/subscriptions/g/ack"))
            .json(&json!({"delivery_ids": [got[0], got[1], "nope"]})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(out, json!({"acked": [got[0], got[1]], "unknown": ["nope"]}));
    let (st, out) = send(
        c.post(format!("{u}/subscriptions/g/nack"))
            .json(&json!({"delivery_ids": [got[2]], "action": "retry", "reason": "busy"})),
    )
    .await;
    assert_eq!((st, out["acked"].as_array().map(Vec::len)), (200, Some(1)));
    let (st, _) = send(
        c.post(format!("{u}/subscriptions/g/nack"))
            .json(&json!({"delivery_ids": [got[3]], "action": "park", "reason": "bad data"})),
    )
    .await;
    assert_eq!(st, 200);

    let (st, parked) = send(c.get(format!("{u}/subscriptions/g/parked?limit=10"))).await;
    assert_eq!(st, 200);
    assert_eq!(parked["parked"][0]["reason"], "bad data");
    assert_eq!(parked["parked"][0]["attempts"], 1);
    assert_eq!(parked["parked"][0]["event"]["stream"], "order-1");
    assert!(parked["parked"][0]["parked_at"].is_string());
    let (st, page) = send(c.get(format!("{u}/streams/$parked-g"))).await;
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["events"][0]["type"], "parked");
    assert_eq!(page["events"][0]["data"]["reason"], "bad data");
    let (st, _) = send(
        c.post(format!("{u}/streams/$parked-g"))
            .json(&json!([{"type": "x"}])),
    )
    .await;
    assert_eq!(st, 400, "$parked-g is read-only");

    let (st, info) = send(c.get(format!("{u}/subscriptions/g"))).await;
    assert_eq!(st, 200);
    assert_eq!(
        (info["parked"].as_u64(), info["acked_total"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(info["consumers"][0]["name"], "c1");
    assert!(
        scrape(&c, &u)
            .await
            .contains("eventfold_consumer_group_parked{group=\"g\"} 1"),
        "the parked gauge counts the parked event"
    );

    let (st, r) = send(
        c.post(format!("{u}/subscriptions/g/parked/replay"))
            .json(&json!({})),
    )
    .await;
    assert_eq!((st, r), (200, json!({"replayed": 1})));
    let metrics = scrape(&c, &u).await;
    for m in [
        "eventfold_consumer_group_parked{group=\"g\"} 0",
        "eventfold_events_parked_total{group=\"g\"} 1",
    ] {
        assert!(
            metrics.contains(m),
            "after the replay, {m} missing from:\n{metrics}"
        );
    }

    // Push: the rest (6 fresh, the retried one, the replayed one) over NDJSON.
    let resp = c
        .get(format!("{u}/subscriptions/g/stream?consumer=c2"))
        .header("Accept", "application/x-ndjson")
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut pushed: Vec<Value> = Vec::new();
    while pushed.len() < 8 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("deliveries pushed")
            .expect("open")
            .expect("chunk");
        text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(i) = text.find('\n') {
            let line: String = text.drain(..=i).collect();
            if !line.trim().is_empty() {
                pushed.push(serde_json::from_str(&line).expect("a delivery per line"));
            }
        }
    }
    let push_ids: Vec<String> = pushed
        .iter()
        .map(|d| d["delivery_id"].as_str().expect("id").to_owned())
        .collect();
    let (st, out) = send(
        c.post(format!("{u}/subscriptions/g/ack"))
            .json(&json!({"delivery_ids": push_ids})),
    )
    .await;
    assert_eq!(
        (st, out["unknown"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    drop(body);

    let (_, info) = send(c.get(format!("{u}/subscriptions/g"))).await;
    assert_eq!(
        (info["lag"].as_u64(), info["in_flight"].as_u64()),
        (Some(0), Some(0)),
        "{info}"
    );
    let metrics = scrape(&c, &u).await;
    for m in [
        "eventfold_consumer_group_acked_total{group=\"g\"} 10",
        "eventfold_consumer_group_delivered_total{group=\"g\"}",
        "eventfold_consumer_group_retried_total{group=\"g\"} 1",
        "eventfold_consumer_group_in_flight{group=\"g\"} 0",
        "eventfold_consumer_group_lag{group=\"g\"} 0",
        "eventfold_events_parked_total{group=\"g\"} 1",
    ] {
        assert!(metrics.contains(m), "{m} missing from:\n{metrics}");
    }
    let (_, doc) = send(c.get(format!("{u}/openapi.json"))).await;
    assert!(doc["paths"]["/subscriptions/{group}/pull"]["post"].is_object());

    let (st, _) = send(c.delete(format!("{u}/subscriptions/g"))).await;
    assert_eq!(st, 204);
    let (st, err) = send(c.get(format!("{u}/subscriptions/g"))).await;
    assert_eq!((st, code(&err)), (404, "group_not_found"));
}

#[tokio::test]
async fn bad_group_inputs_get_the_contracts_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &["--durability", "none"]);
    let (c, u) = (client(), s.url.clone());
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.put(format!("{u}/subscriptions/a%20b")).json(&json!({})),
            400,
            "invalid_request",
        ),
        (
            c.put(format!("{u}/subscriptions/g"))
                .json(&json!({"bogus": 1})),
            400,
            "invalid_body",
        ),
        (
            c.put(format!("{u}/subscriptions/g"))
                .json(&json!({"max_in_flight": 0})),
            400,
            "invalid_request",
        ),
        (
            c.put(format!("{u}/subscriptions/g"))
                .json(&json!({"filter": {"category": "a", "stream": "b"}})),
            400,
            "invalid_request",
        ),
        (
            c.put(format!("{u}/subscriptions/g"))
                .json(&json!({"start": "later"})),
            400,
            "invalid_body",
        ),
        (
            c.get(format!("{u}/subscriptions/missing")),
            404,
            "group_not_found",
        ),
        (
            c.delete(format!("{u}/subscriptions/missing")),
            404,
            "group_not_found",
        ),
        (
            c.post(format!("{u}/subscriptions/missing/pull"))
                .json(&json!({"consumer": "c"})),
            404,
            "group_not_found",
        ),
        (
            c.get(format!("{u}/streams/$parked-missing")),
            404,
            "group_not_found",
        ),
    ];
    for (rb, status, want) in cases {
        let (st, v) = send(rb).await;
        assert_eq!((st, code(&v)), (status, want), "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (st, _) = send(
        c.put(format!("{u}/subscriptions/g"))
            .json(&json!({"start": "start"})),
    )
    .await;
    assert_eq!(st, 201);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.post(format!("{u}/subscriptions/g/pull")).json(&json!({})),
            400,
            "invalid_body",
        ),
        (
            c.post(format!("{u}/subscriptions/g/pull"))
                .json(&json!({"consumer": "c", "max": 0})),
            400,
            "invalid_request",
        ),
        (
            c.post(format!("{u}/subscriptions/g/pull"))
                .json(&json!({"consumer": "c", "wait_ms": 3_600_000})),
            400,
            "invalid_request",
        ),
        (
            c.post(format!("{u}/subscriptions/g/pull"))
                .json(&json!({"consumer": "bad name"})),
            400,
            "invalid_request",
        ),
        (
            c.post(format!("{u}/subscriptions/g/pull"))
                .body("{not json"),
            400,
            "invalid_body",
        ),
        (
            c.post(format!("{u}/subscriptions/g/ack"))
                .json(&json!({"delivery_ids": []})),
            400,
            "invalid_request",
        ),
        (
            c.post(format!("{u}/subscriptions/g/nack"))
                .json(&json!({"delivery_ids": ["x"], "action": "explode"})),
            400,
            "invalid_body",
        ),
        (
            c.get(format!("{u}/subscriptions/g/parked?limit=abc")),
            400,
            "invalid_query",
        ),
        (
            c.get(format!("{u}/subscriptions/g/parked?limit=0")),
            400,
            "invalid_request",
        ),
        (
            c.post(format!("{u}/subscriptions/g/parked/replay"))
                .json(&json!({"max": 0})),
            400,
            "invalid_request",
        ),
        (
            c.get(format!("{u}/subscriptions/g/stream")),
            400,
            "invalid_query",
        ),
    ];
    for (rb, status, want) in cases {
        let (st, v) = send(rb).await;
        assert_eq!((st, code(&v)), (status, want), "{v}");
    }
    // Unknown ids are not an error.
    let (st, v) = send(
        c.post(format!("{u}/subscriptions/g/ack"))
            .json(&json!({"delivery_ids": ["x"]})),
    )
    .await;
    assert_eq!((st, v), (200, json!({"acked": [], "unknown": ["x"]})));
    let (st, _) = send(c.get(format!("{u}/health/ready"))).await;
    assert_eq!(st, 200, "the server keeps serving");
}

/// kill -9 of the server during delivery: after a restart no acknowledged event comes again
/// and every unacknowledged one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delivery_loses_no_ack_and_no_event() {
    const EVENTS: u64 = 5000;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &[]); // default durability: fsync
    let (c, u) = (client(), s.url.clone());
    append(&c, &u, "order-1", EVENTS as usize).await;
    let (st, _) = send(
        c.put(format!("{u}/subscriptions/k"))
            .json(&json!({"start": "start", "ack_timeout_ms": 600000, "max_in_flight": 10000})),
    )
    .await;
    assert_eq!(st, 201);

    // A consumer that acks the even positions of every batch, one ack request per batch.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::<u64>::new()));
    let in_doubt = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::<u64>::new()));
    let consumer = {
        let (c, u, acked, in_doubt) = (c.clone(), u.clone(), acked.clone(), in_doubt.clone());
        tokio::spawn(async move {
            loop {
                let Ok(resp) = c
                    .post(format!("{u}/subscriptions/k/pull"))
                    .json(&json!({"consumer": "c", "max": 50, "wait_ms": 1000}))
                    .send()
                    .await
                else {
                    return;
                };
                let Ok(ds) = resp.json::<Value>().await else {
                    return;
                };
                let (ids, pos) = (ids(&ds), positions(&ds));
                let (even_ids, even_pos): (Vec<String>, Vec<u64>) =
                    ids.into_iter().zip(pos).filter(|(_, p)| p % 2 == 0).unzip();
                in_doubt.lock().expect("lock").extend(&even_pos);
                let r = c
                    .post(format!("{u}/subscriptions/k/ack"))
                    .json(&json!({"delivery_ids": even_ids}))
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().as_u16() == 200 => {
                        let mut d = in_doubt.lock().expect("lock");
                        let mut a = acked.lock().expect("lock");
                        for p in even_pos {
                            d.remove(&p);
                            a.insert(p);
                        }
                    }
                    _ => return,
                }
            }
        })
    };
    // Kill once a few hundred acks are done: mid-delivery, with acks in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "the consumer made no progress"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::task::spawn_blocking(move || s.kill9())
        .await
        .expect("kill");
    let _ = consumer.await;
    let acked = acked.lock().expect("lock").clone();
    let in_doubt = in_doubt.lock().expect("lock").clone();
    assert!(!acked.is_empty(), "some acks were made before the kill");
    assert!(
        (acked.len() as u64) < EVENTS / 2,
        "the kill came during delivery"
    );

    let s = Server::start(dir.path(), &[]);
    let u = s.url.clone();
    let mut again = BTreeSet::new();
    loop {
        let (st, ds) = send(
            c.post(format!("{u}/subscriptions/k/pull"))
                .json(&json!({"consumer": "d", "max": 1000, "wait_ms": 1500})),
        )
        .await;
        assert_eq!(st, 200);
        let pos = positions(&ds);
        if pos.is_empty() {
            break;
        }
        for p in &pos {
            assert!(
                again.insert(*p),
                "position {p} delivered twice after the restart"
            );
        }
        let (st, _) = send(
            c.post(format!("{u}/subscriptions/k/ack"))
                .json(&json!({"delivery_ids": ids(&ds)})),
        )
        .await;
        assert_eq!(st, 200);
    }
    let acked_again: Vec<&u64> = again.intersection(&acked).collect();
    assert!(
        acked_again.is_empty(),
        "acknowledged events came again: {acked_again:?}"
    );
    let expected: BTreeSet<u64> = (0..EVENTS)
        .filter(|p| !acked.contains(p) && !in_doubt.contains(p))
        .collect();
    let missing: Vec<&u64> = expected.difference(&again).collect();
    assert!(
        missing.is_empty(),
        "unacknowledged events never came again: {missing:?}"
    );
}

/// Runs `eventfold group ...` against `server`; returns (exit status, stdout).
fn group_cmd(server: &str, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .arg("group")
        .args(args)
        .args(["--server", server])
        .env_remove("EVENTFOLD_TOKEN")
        .output()
        .expect("run eventfold group");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commands_create_inspect_list_parked_replay_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &["--durability", "none"]);
    let (c, u) = (client(), s.url.clone());
    append(&c, &u, "order-1", 3).await;
    let run = |args: Vec<&'static str>| {
        let u = u.clone();
        async move {
            tokio::task::spawn_blocking(move || group_cmd(&u, &args))
                .await
                .expect("join")
        }
    };
    let (st, text) = run(vec![
        "create",
        "g",
        "--category",
        "order",
        "--start",
        "start",
        "--max-deliveries",
        "2",
    ])
    .await;
    assert_eq!(st, 0, "{text}");
    assert!(text.contains("created consumer group g"), "{text}");
    let (st, text) = run(vec![
        "create",
        "g",
        "--category",
        "order",
        "--max-deliveries",
        "3",
    ])
    .await;
    assert_eq!((st, text.contains("updated")), (0, true), "{text}");

    let (_, ds) = send(
        c.post(format!("{u}/subscriptions/g/pull"))
            .json(&json!({"consumer": "c", "max": 1, "wait_ms": 2000})),
    )
    .await;
    send(
        c.post(format!("{u}/subscriptions/g/nack"))
            .json(&json!({"delivery_ids": ids(&ds), "action": "park", "reason": "no handler"})),
    )
    .await;

    let (st, text) = run(vec!["list", "--json"]).await;
    assert_eq!(st, 0);
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["subscriptions"][0]["group"], "g");
    assert_eq!(v["subscriptions"][0]["max_deliveries"], 3);
    let (st, text) = run(vec!["info", "g"]).await;
    assert_eq!(st, 0);
    assert!(text.contains("parked") && text.contains("order"), "{text}");
    let (st, text) = run(vec!["parked", "g"]).await;
    assert_eq!(st, 0);
    assert!(
        text.contains("order-1#0") && text.contains("no handler"),
        "{text}"
    );
    let (st, text) = run(vec!["replay", "g"]).await;
    assert_eq!(
        (st, text.trim()),
        (0, "replayed 1 parked event of consumer group g")
    );
    // Pinned by a metadata field: shown by info, fixed while pinned, checked for its shape.
    let (st, text) = run(vec![
        "create",
        "k",
        "--strategy",
        "pinned",
        "--pin-by",
        "metadata.partition_key",
    ])
    .await;
    assert_eq!(st, 0, "{text}");
    let (st, text) = run(vec!["info", "k"]).await;
    assert_eq!(st, 0);
    assert!(
        text.lines()
            .any(|l| l.starts_with("pin_by") && l.ends_with(" metadata.partition_key")),
        "{text}"
    );
    let (st, _) = run(vec![
        "create",
        "k",
        "--strategy",
        "pinned",
        "--pin-by",
        "stream",
    ])
    .await;
    assert_eq!(st, 1, "the server refuses to change a pinned group's key");
    let (st, _) = run(vec!["create", "k", "--pin-by", "partition_key"]).await;
    assert_eq!(
        st, 2,
        "a pin_by that is neither stream nor metadata.FIELD is a usage error"
    );
    let (st, _) = run(vec!["delete", "k"]).await;
    assert_eq!(st, 0);

    let (st, text) = run(vec!["delete", "g"]).await;
    assert_eq!((st, text.trim()), (0, "deleted consumer group g"));
    let (st, _) = run(vec!["info", "g"]).await;
    assert_eq!(st, 1, "a missing group is a refusal");
    let (st, _) = run(vec!["create", "bad name"]).await;
    assert_eq!(st, 1, "the server refuses a bad name");
}

/// The push stream over SSE: deliveries as `event: delivery` with the delivery id as `id`;
/// SIGTERM ends it with a closing message and the server exits 0.
#[tokio::test]
async fn sse_push_stream_and_a_clean_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(
        dir.path(),
        &["--durability", "none", "--heartbeat-secs", "1"],
    );
    let (c, u) = (client(), s.url.clone());
    let (st, _) = send(
        c.put(format!("{u}/subscriptions/p"))
            .json(&json!({"start": "start"})),
    )
    .await;
    assert_eq!(st, 201);
    let resp = c
        .get(format!("{u}/subscriptions/p/stream?consumer=c"))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    append(&c, &u, "order-9", 1).await;
    let mut text = String::new();
    while !text.contains("event: delivery") || !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("a delivery")
            .expect("open")
            .expect("chunk");
        text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    let frame = text
        .split("\n\n")
        .find(|f| f.contains("event: delivery"))
        .expect("frame");
    let id = frame
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("id line");
    let data: Value = serde_json::from_str(
        frame
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data line"),
    )
    .expect("json");
    assert_eq!(data["delivery_id"], id);
    assert_eq!(data["event"]["stream"], "order-9");
    let (st, out) = send(
        c.post(format!("{u}/subscriptions/p/ack"))
            .json(&json!({"delivery_ids": [id]})),
    )
    .await;
    assert_eq!((st, out["acked"][0].as_str()), (200, Some(id)));
    let (_, info) = send(c.get(format!("{u}/subscriptions/p"))).await;
    assert_eq!(info["consumers"][0]["push_streams"], 1, "{info}");

    let stop = tokio::task::spawn_blocking(move || s.terminate());
    let mut rest = String::new();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(10), body.next()).await
    {
        rest.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    assert!(
        rest.contains("event: closing") && rest.contains("server_shutdown"),
        "closing message missing: {rest:?}"
    );
    assert!(stop.await.expect("join").success());
}

/// `eventfold verify DIR` as a process: (status, stdout, stderr).
fn verify(dir: &std::path::Path) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .arg("verify")
        .arg(dir)
        .output()
        .expect("run eventfold verify");
    (
        out.status.code().expect("an exit status"),
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8(out.stderr).expect("utf-8"),
    )
}

#[tokio::test]
async fn verify_checks_the_consumer_group_state_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &["--durability", "none"]);
    let (c, u) = (client(), s.url.clone());
    append(&c, &u, "order-1", 3).await;
    let (st, info) = send(
        c.put(format!("{u}/subscriptions/g"))
            .json(&json!({"filter": {"category": "order"}, "start": "start"})),
    )
    .await;
    assert_eq!(st, 201, "{info}");
    assert!(s.terminate().success());

    let (status, out, err) = verify(dir.path());
    assert_eq!(status, 0, "{out}{err}");
    let groups = dir.path().join("groups");
    assert!(
        out.contains(&format!("store in {}:", dir.path().display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("consumer-group state in {}:", groups.display())),
        "{out}"
    );
    assert_eq!(out.matches("OK: the store is whole").count(), 2, "{out}");

    // One damaged byte in the groups store's first segment: verify fails and names the file.
    let mut segs: Vec<_> = std::fs::read_dir(&groups)
        .expect("groups dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let seg = segs.first().expect("a groups segment").clone();
    let mut bytes = std::fs::read(&seg).expect("read segment");
    bytes[0] ^= 0xff;
    std::fs::write(&seg, bytes).expect("write segment");
    let (status, out, err) = verify(dir.path());
    assert_eq!(status, 1, "{out}{err}");
    assert_eq!(out.matches("OK: the store is whole").count(), 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("PROBLEM:") && l.contains(&seg.display().to_string())),
        "the problem names {}:\n{out}",
        seg.display()
    );

    // Without group state, verify says so and checks the store alone.
    std::fs::remove_dir_all(&groups).expect("remove groups");
    let (status, out, err) = verify(dir.path());
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.contains("consumer-group state: none"), "{out}");
}
