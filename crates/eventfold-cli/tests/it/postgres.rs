//! `eventfold serve --store postgres://…` as a real process: the HTTP API and consumer groups on
//! a database created for the test (and dropped after it), and the errors of a bad `--store`.
//! The tests that need PostgreSQL at 127.0.0.1:5432 are skipped, with the reason printed, when
//! it is unreachable, unless `EVENTFOLD_REQUIRE_SERVICES=1`.

use std::ffi::OsStr;
use std::process::Command;

use serde_json::json;

use eventfold_store_postgres::testing::TestDb;

use crate::server::{Server, client, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_postgres_appends_reads_and_runs_consumer_groups() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = db.url();
    let s = Server::start_with(&[
        OsStr::new("--store"),
        OsStr::new(&url),
        OsStr::new("--heartbeat-secs"),
        OsStr::new("1"),
    ]);
    let (c, u) = (client(), s.url.clone());

    let (st, v) = send(
        c.post(format!("{u}/streams/order-1"))
            .header("Expected-Revision", "no-stream")
            .json(&json!([{"type": "order.placed", "data": {"n": 0}}, {"type": "order.paid", "data": {"n": 1}}])),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        v,
        json!({"stream": "order-1", "first_revision": 0, "last_revision": 1, "first_position": 0, "last_position": 1})
    );
    let (st, v) = send(
        c.post(format!("{u}/streams/user-1"))
            .json(&json!([{"type": "user.joined", "data": {"n": 2}}])),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = send(
        c.post(format!("{u}/streams/order-1"))
            .header("Expected-Revision", "no-stream")
            .json(&json!([{"type": "x", "data": 1}])),
    )
    .await;
    assert_eq!(st, 409, "the expected revision is checked: {v}");

    let (st, page) = send(c.get(format!("{u}/streams/order-1"))).await;
    assert_eq!(st, 200, "{page}");
    let types: Vec<&str> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["order.placed", "order.paid"]);
    let (st, all) = send(c.get(format!("{u}/all"))).await;
    assert_eq!(st, 200, "{all}");
    let seen: Vec<(&str, u64)> = all["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["stream"].as_str().expect("stream"),
                e["position"].as_u64().expect("position"),
            )
        })
        .collect();
    assert_eq!(seen, [("order-1", 0), ("order-1", 1), ("user-1", 2)]);

    let cfg = json!({"filter": {"category": "order"}, "start": "start", "ack_timeout_ms": 20000});
    let (st, info) = send(c.put(format!("{u}/subscriptions/g")).json(&cfg)).await;
    assert_eq!(st, 201, "{info}");
    let (st, ds) = send(
        c.post(format!("{u}/subscriptions/g/pull"))
            .json(&json!({"consumer": "c1", "max": 10, "wait_ms": 5000})),
    )
    .await;
    assert_eq!(st, 200, "{ds}");
    let deliveries = ds["deliveries"].as_array().expect("deliveries");
    let positions: Vec<u64> = deliveries
        .iter()
        .map(|d| d["event"]["position"].as_u64().expect("position"))
        .collect();
    assert_eq!(positions, [0, 1], "the group delivers the order events");
    let ids: Vec<&str> = deliveries
        .iter()
        .map(|d| d["delivery_id"].as_str().expect("delivery id"))
        .collect();
    let (st, out) = send(
        c.post(format!("{u}/subscriptions/g/ack"))
            .json(&json!({"delivery_ids": ids})),
    )
    .await;
    assert_eq!(st, 200, "{out}");
    assert_eq!(out["acked"].as_array().map(Vec::len), Some(2), "{out}");
    let (st, info) = send(c.get(format!("{u}/subscriptions/g"))).await;
    assert_eq!(st, 200, "{info}");
    assert_eq!(info["acked_total"].as_u64(), Some(2), "{info}");

    // The groups' state is in its own schema: the user's `$all` still holds their 3 events.
    let (_, all) = send(c.get(format!("{u}/all"))).await;
    assert_eq!(all["events"].as_array().map(Vec::len), Some(3), "{all}");
    let status = s.terminate();
    assert!(
        status.success(),
        "SIGTERM stops the server cleanly: {status}"
    );

    let pg = db.client().await.expect("connect to the test database");
    let schemas: Vec<String> = pg
        .query(
            "SELECT DISTINCT table_schema::text FROM information_schema.tables \
             WHERE table_schema LIKE 'eventfold%' ORDER BY 1",
            &[],
        )
        .await
        .expect("list the schemas")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(schemas, ["eventfold", "eventfold_groups"]);
    drop(pg);
}

/// Runs `eventfold serve` with `args` to its exit; the status and standard error.
fn serve_exits(args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("EVENTFOLD_LOG", "warn")
        .env_remove("EVENTFOLD_STORE")
        .env_remove("EVENTFOLD_DATA")
        .output()
        .expect("run eventfold serve");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unreachable_postgres_is_a_clear_error_without_the_password() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://someone:s3cret@127.0.0.1:{port}/events");
    let (status, stderr) = serve_exits(&["--store", &url]);
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains(&format!("postgres://someone@127.0.0.1:{port}/events")),
        "stderr names the URL: {stderr}"
    );
    assert!(stderr.contains("check that"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "never the password: {stderr}");
}

#[test]
fn a_store_that_is_not_postgres_or_beside_data_is_a_usage_error() {
    let (status, stderr) = serve_exits(&["--store", "mysql://u@h/db"]);
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("postgres://") && stderr.contains("--data"),
        "names what is accepted: {stderr}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("a UTF-8 temp path");
    let (status, stderr) = serve_exits(&["--store", "postgres://u@h/db", "--data", data]);
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("--store and --data"),
        "says they conflict: {stderr}"
    );
    assert!(
        !std::path::Path::new(data).exists(),
        "no store is created on a usage error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_comes_from_the_environment_and_the_config_file_too() {
    let out = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("EVENTFOLD_LOG", "warn")
        .env("EVENTFOLD_STORE", "redis://from-env")
        .env_remove("EVENTFOLD_DATA")
        .output()
        .expect("run eventfold serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("redis://from-env"), "{stderr}");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("eventfold.toml");
    std::fs::write(&config, "store = \"redis://from-file\"\n").expect("write the config");
    let config = config.to_str().expect("a UTF-8 temp path");
    let (status, stderr) = serve_exits(&["--config", config]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("redis://from-file"), "{stderr}");

    // A --data flag wins over the file's store as a whole: the server starts on the engine.
    let data = dir.path().join("data");
    let s = Server::start_with(&[
        OsStr::new("--config"),
        OsStr::new(config),
        OsStr::new("--data"),
        data.as_os_str(),
    ]);
    // Served a request: its SIGTERM handler is installed.
    let (st, _) = send(client().get(format!("{}/health/live", s.url))).await;
    assert_eq!(st, 200);
    let status = s.terminate();
    assert!(status.success(), "{status}");
    assert!(
        data.join("groups").is_dir(),
        "the engine's data is in --data"
    );
}
