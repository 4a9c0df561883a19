//! A consumer group pinned by a metadata field over HTTP, in process: two consumers share
//! orders whose streams interleave customers, and each customer's events are handled by one
//! consumer in order, retries included; the settings' errors.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use eventfold_core::EventStore;
use eventfold_engine::{Engine, EngineOptions};
use eventfold_groups::Groups;
use eventfold_server::{AppState, ServerLimits};
use serde_json::{Value, json};
use tower::ServiceExt as _;

async fn send(app: &axum::Router, method: &str, uri: &str, body: Value) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        })
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON")
    };
    (status, v)
}

/// The app over two engines in `dirs` (source and groups' state).
async fn app(dirs: &(tempfile::TempDir, tempfile::TempDir)) -> axum::Router {
    let engine: Arc<dyn EventStore> =
        Arc::new(Engine::open(dirs.0.path(), EngineOptions::for_tests()).expect("engine"));
    let state: Arc<dyn EventStore> =
        Arc::new(Engine::open(dirs.1.path(), EngineOptions::for_tests()).expect("engine"));
    let groups = Groups::open(engine.clone(), state).await.expect("groups");
    eventfold_server::router(AppState::new(engine, ServerLimits::default()).with_groups(groups))
}

fn dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    )
}

/// 24 orders over 4 streams, 3 customers interleaved across them (`partition_key`), 2
/// consumers pulling in turns. A consumer handles its deliveries in order; every third pull
/// the first delivery fails (`retry`), and so do the later ones of its customer in that pull
/// (a consumer keeping a customer's order stops at its first failure). The acks of each
/// customer come in order, all from one consumer, and both consumers get customers.
#[tokio::test]
async fn a_group_pinned_by_partition_key_keeps_each_customers_order() {
    let dirs = dirs();
    let app = app(&dirs).await;
    let (st, info) = send(
        &app,
        "PUT",
        "/subscriptions/billing",
        json!({"start": "start", "strategy": "pinned", "pin_by": {"metadata": "partition_key"},
               "retry_backoff": {"initial_ms": 1, "max_ms": 1, "multiplier": 1.0}}),
    )
    .await;
    assert_eq!(st, 201, "{info}");
    assert_eq!(info["pin_by"], json!({"metadata": "partition_key"}));
    let orders = 24;
    for i in 0..orders {
        let (st, body) = send(
            &app,
            "POST",
            &format!("/streams/order-{}", i % 4),
            json!([{"type": "order.placed", "data": {"i": i},
                    "metadata": {"partition_key": format!("customer-{}", (i / 2) % 3)}}]),
        )
        .await;
        assert_eq!(st, 201, "{body}");
    }

    // Per customer, the orders acked (in ack order) and who acked them.
    let mut acked: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut by: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut done = 0;
    let mut failures = 0;
    for round in 0..1_000 {
        if done == orders {
            break;
        }
        let consumer = ["c1", "c2"][round % 2];
        let (st, ds) = send(
            &app,
            "POST",
            "/subscriptions/billing/pull",
            json!({"consumer": consumer, "max": 3, "wait_ms": 100}),
        )
        .await;
        assert_eq!(st, 200, "{ds}");
        let mut failed: BTreeSet<String> = BTreeSet::new();
        let (mut ack, mut nack) = (Vec::new(), Vec::new());
        for (n, d) in ds["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .enumerate()
        {
            let customer = d["event"]["metadata"]["partition_key"]
                .as_str()
                .expect("a customer")
                .to_owned();
            let id = d["delivery_id"].clone();
            if (n == 0 && round % 3 == 0 && d["attempt"] == 1) || failed.contains(&customer) {
                failed.insert(customer);
                nack.push(id);
                continue;
            }
            acked
                .entry(customer.clone())
                .or_default()
                .push(d["event"]["data"]["i"].as_u64().expect("i"));
            by.entry(customer).or_default().insert(consumer);
            ack.push(id);
        }
        if !nack.is_empty() {
            failures += nack.len();
            let (st, out) = send(
                &app,
                "POST",
                "/subscriptions/billing/nack",
                json!({"delivery_ids": nack, "action": "retry", "reason": "try again"}),
            )
            .await;
            assert_eq!((st, out["unknown"].clone()), (200, json!([])), "{out}");
        }
        if !ack.is_empty() {
            done += ack.len();
            let (st, out) = send(
                &app,
                "POST",
                "/subscriptions/billing/ack",
                json!({ "delivery_ids": ack }),
            )
            .await;
            assert_eq!((st, out["unknown"].clone()), (200, json!([])), "{out}");
        }
    }
    assert_eq!(done, orders, "every order acked: {acked:?}");
    assert!(failures > 0, "some deliveries were retried");
    for (customer, is) in &acked {
        let mut sorted = is.clone();
        sorted.sort_unstable();
        assert_eq!(is, &sorted, "{customer}'s orders acked out of order");
        assert_eq!(
            by[customer].len(),
            1,
            "{customer} went to {:?}",
            by[customer]
        );
    }
    let consumers: BTreeSet<&str> = by.values().flatten().copied().collect();
    assert_eq!(consumers.len(), 2, "both consumers got customers: {by:?}");
}

/// `pin_by` on the wire: a bad field, `pin_by` without `pinned`, and a change of a pinned
/// group's key are refused with their codes; the info shows it.
#[tokio::test]
async fn pin_by_settings_and_their_errors() {
    let dirs = dirs();
    let app = app(&dirs).await;
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_owned();
    let (st, v) = send(
        &app,
        "PUT",
        "/subscriptions/g",
        json!({"strategy": "pinned", "pin_by": {"metadata": ""}}),
    )
    .await;
    assert_eq!((st, code(&v)), (400, "invalid_request".into()), "{v}");
    let (st, v) = send(
        &app,
        "PUT",
        "/subscriptions/g",
        json!({"pin_by": {"metadata": "partition_key"}}),
    )
    .await;
    assert_eq!((st, code(&v)), (400, "invalid_request".into()), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("strategy `pinned`")),
        "{v}"
    );
    let (st, v) = send(
        &app,
        "PUT",
        "/subscriptions/g",
        json!({"pin_by": "customer"}),
    )
    .await;
    assert_eq!((st, code(&v)), (400, "invalid_body".into()), "{v}");

    let (st, v) = send(
        &app,
        "PUT",
        "/subscriptions/g",
        json!({"strategy": "pinned"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["pin_by"], "stream");
    let (st, v) = send(
        &app,
        "PUT",
        "/subscriptions/g",
        json!({"strategy": "pinned", "pin_by": {"metadata": "partition_key"}}),
    )
    .await;
    assert_eq!((st, code(&v)), (409, "pin_by_change_refused".into()), "{v}");
    let (st, v) = send(&app, "GET", "/subscriptions/g", Value::Null).await;
    assert_eq!((st, v["pin_by"].clone()), (200, json!("stream")), "{v}");
}
