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
    let ds = crate::groups::pull_n(&c, &u, "g", "c1", 2).await;
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
    let (st, more) = send(
        c.post(format!("{u}/subscriptions/g/pull"))
            .json(&json!({"consumer": "c1", "max": 10, "wait_ms": 300})),
    )
    .await;
    assert_eq!(
        (st, more["deliveries"].as_array().map(Vec::len)),
        (200, Some(0)),
        "the user event is not the group's: {more}"
    );

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

/// Terminates every connection of the server to `db` (what a PostgreSQL restart or an admin
/// does to it), from the admin connection; how many were terminated.
async fn terminate_connections(admin: &tokio_postgres::Client, db: &TestDb) -> i64 {
    admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db.name()],
        )
        .await
        .expect("terminate the server's connections")
        .get(0)
}

/// An HTTP client without a total timeout, for subscriptions.
fn streaming_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// What appenders saw: batches acknowledged (ids in order) and the 503s on the way.
#[derive(Default, Debug)]
struct AppendLog {
    acked_ids: Vec<String>,
    unavailable: u32,
    outcome_unknown: u32,
}

/// Appends batches of 1..=3 events to `stream` until `stop`, each batch retried with the same
/// ids after a `503 store_unavailable` until it is acknowledged (the contract's idempotent
/// retry); any other answer fails the test.
async fn append_until(
    u: String,
    stream: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> AppendLog {
    let c = client();
    let mut log = AppendLog::default();
    let mut n = 0usize;
    while !*stop.borrow() {
        n += 1;
        let ids: Vec<String> = (0..1 + n % 3)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let body: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| json!({"id": id, "type": "order.step", "data": {"n": n}}))
            .collect();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let resp = c
                .post(format!("{u}/streams/{stream}"))
                .json(&body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("the server must answer every append: {e}"));
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let v: serde_json::Value = resp.json().await.expect("a JSON answer");
            match status {
                201 | 200 => {
                    assert!(
                        status == 201 || attempts > 1,
                        "a replay only for a retry: {v}"
                    );
                    log.acked_ids.extend(ids.iter().cloned());
                    break;
                }
                503 => {
                    assert_eq!(v["error"]["code"], "store_unavailable", "{v}");
                    let msg = v["error"]["message"].as_str().unwrap_or_default();
                    assert!(msg.contains("retry"), "the message says what to do: {v}");
                    assert_eq!(retry_after.as_deref(), Some("1"), "{v}");
                    log.unavailable += 1;
                    if v["error"]["outcome_unknown"] == true {
                        assert!(msg.contains("same event ids"), "{v}");
                        log.outcome_unknown += 1;
                    }
                    assert!(
                        attempts < 200,
                        "the server did not recover within 200 retries: {v}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                _ => panic!("an append during a database failure answered {status}: {v}"),
            }
        }
    }
    log
}

/// Follows `$all` from the start as NDJSON, recording (id, position) of every event, until
/// aborted; the stream ending is recorded as an error.
async fn follow_all(
    u: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, u64)>>>,
) -> String {
    use futures::StreamExt as _;
    let resp = streaming_client()
        .get(format!("{u}/all/subscribe?from=start"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("subscribe");
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return format!("the subscription broke: {e}"),
        };
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&line).expect("an NDJSON line");
            if v.get("error").is_some() || v.get("closing").is_some() {
                return format!("the subscription ended: {v}");
            }
            let id = v["id"].as_str().expect("id").to_owned();
            let position = v["position"].as_u64().expect("position");
            seen.lock().expect("lock").push((id, position));
        }
    }
    "the subscription's body ended".to_owned()
}

/// Every event of `$all`, (id, position), read through the server page by page.
async fn read_all_ids(u: &str) -> Vec<(String, u64)> {
    let c = client();
    let mut out = Vec::new();
    let mut from = "start".to_owned();
    loop {
        let (st, page) = send(c.get(format!("{u}/all?from={from}&limit=1000"))).await;
        assert_eq!(st, 200, "{page}");
        for e in page["events"].as_array().expect("events") {
            out.push((
                e["id"].as_str().expect("id").to_owned(),
                e["position"].as_u64().expect("position"),
            ));
        }
        match page["next"].as_u64() {
            Some(n) => from = n.to_string(),
            None => return out,
        }
    }
}

/// PostgreSQL dropping the server's connections (`pg_terminate_backend`, as in a database
/// restart) while clients append and a subscriber follows `$all`: appends in flight fail with
/// `503 store_unavailable` (never another 5xx) or succeed, the server recovers by itself, every
/// acknowledged append is stored exactly once, and the subscriber sees every event once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_database_connections_are_503s_and_nothing_is_lost() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = db.url();
    let s = Server::start_with(&[OsStr::new("--store"), OsStr::new(&url)]);
    let u = s.url.clone();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let follower = tokio::spawn(follow_all(u.clone(), seen.clone()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let appenders: Vec<_> = (0..4)
        .map(|k| {
            tokio::spawn(append_until(
                u.clone(),
                format!("order-{k}"),
                stopped.clone(),
            ))
        })
        .collect();

    let pg = eventfold_store_postgres::testing::admin()
        .await
        .expect("admin connection");
    let mut terminated = 0;
    for _ in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        terminated += terminate_connections(&pg, &db).await;
    }
    assert!(terminated > 0, "the server's connections were terminated");
    // The server recovers by itself: appends go on, and it reports ready.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    stop.send_replace(true);
    let mut acked: Vec<String> = Vec::new();
    let (mut unavailable, mut unknown) = (0, 0);
    for a in appenders {
        let log = a.await.expect("an appender failed");
        assert!(!log.acked_ids.is_empty());
        acked.extend(log.acked_ids);
        unavailable += log.unavailable;
        unknown += log.outcome_unknown;
    }
    eprintln!(
        "{terminated} connections terminated; {} events acknowledged; {unavailable} answers 503, \
         {unknown} of them with an unknown outcome",
        acked.len()
    );
    let (st, v) = send(client().get(format!("{u}/health/ready"))).await;
    assert_eq!(st, 200, "ready again: {v}");
    let (st, v) = send(
        client()
            .post(format!("{u}/streams/after-1"))
            .json(&json!([{"type": "after", "data": {}}])),
    )
    .await;
    assert_eq!(st, 201, "appends work again: {v}");
    let after_id = {
        let (_, page) = send(client().get(format!("{u}/streams/after-1"))).await;
        page["events"][0]["id"].as_str().expect("id").to_owned()
    };
    acked.push(after_id);

    // Every acknowledged event is stored exactly once, and nothing else.
    let stored = read_all_ids(&u).await;
    let stored_ids: Vec<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
    let mut sorted_stored = stored_ids.clone();
    sorted_stored.sort_unstable();
    let mut sorted_acked: Vec<&str> = acked.iter().map(String::as_str).collect();
    sorted_acked.sort_unstable();
    assert_eq!(
        sorted_stored, sorted_acked,
        "the store holds every acknowledged event exactly once"
    );

    // The subscriber saw the same log, once, in order.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.lock().expect("lock").len() < stored.len() {
        if follower.is_finished() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if follower.is_finished() {
        panic!(
            "the subscription must outlive the failures: {}",
            follower.await.expect("the follower")
        );
    }
    follower.abort();
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen, stored,
        "the subscriber saw every event exactly once, in position order"
    );
    assert!(
        stored.windows(2).all(|w| w[0].1 < w[1].1),
        "positions increase"
    );
    let status = s.terminate();
    assert!(status.success(), "{status}");
}

/// While PostgreSQL refuses connections to the database, `/health/ready` is `503 not_ready`
/// saying why and appends are `503 store_unavailable` with `Retry-After`; once it takes them
/// again the server is ready and appends by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_503_while_the_database_is_away() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = db.url();
    let s = Server::start_with(&[OsStr::new("--store"), OsStr::new(&url)]);
    let (c, u) = (client(), s.url.clone());
    let append = |n: u32| {
        c.post(format!("{u}/streams/order-1"))
            .json(&json!([{"type": "order.step", "data": {"n": n}}]))
    };
    assert_eq!(send(append(0)).await.0, 201);
    let (st, v) = send(c.get(format!("{u}/health/ready"))).await;
    assert_eq!(st, 200, "{v}");

    let pg = eventfold_store_postgres::testing::admin()
        .await
        .expect("admin connection");
    pg.batch_execute(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS false",
        db.name()
    ))
    .await
    .expect("refuse connections");
    terminate_connections(&pg, &db).await;
    let (st, v) = send(c.get(format!("{u}/health/ready"))).await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error"]["code"], "not_ready", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("cannot be reached") && msg.contains("not currently accepting connections"),
        "says why: {msg}"
    );
    let resp = append(1).send().await.expect("an answer");
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let v: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(v["error"]["code"], "store_unavailable", "{v}");
    assert_eq!(v["error"]["outcome_unknown"], false, "{v}");
    let (st, v) = send(c.get(format!("{u}/streams/order-1"))).await;
    assert_eq!(st, 503, "reads too: {v}");

    pg.batch_execute(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        db.name()
    ))
    .await
    .expect("take connections again");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (st, v) = send(c.get(format!("{u}/health/ready"))).await;
        if st == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never ready again: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(send(append(2)).await.0, 201);
    let (st, page) = send(c.get(format!("{u}/streams/order-1"))).await;
    assert_eq!(st, 200, "{page}");
    let ns: Vec<u64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["data"]["n"].as_u64().expect("n"))
        .collect();
    assert_eq!(ns, [0, 2], "the refused append was not written");
    let status = s.terminate();
    assert!(status.success(), "{status}");
}

/// The engine's own settings with a PostgreSQL store are a usage error at start, from a flag or
/// the environment, before any connection is tried.
#[test]
fn engine_only_settings_with_postgres_are_refused() {
    let (status, stderr) = serve_exits(&[
        "--store",
        "postgres://u@127.0.0.1:1/db",
        "--durability",
        "none",
    ]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("--durability") && stderr.contains("PostgreSQL"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "postgres://u@127.0.0.1:1/db",
        ])
        .env("EVENTFOLD_LOG", "warn")
        .env("EVENTFOLD_SEGMENT_BYTES", "1048576")
        .env_remove("EVENTFOLD_DATA")
        .output()
        .expect("run eventfold serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("EVENTFOLD_SEGMENT_BYTES"), "{stderr}");
    assert!(
        !stderr.contains("cannot open"),
        "no connection was tried: {stderr}"
    );
}

/// A supervisor that sends SIGTERM as soon as it has read the "listening" line gets a clean
/// stop, on the engine and on PostgreSQL: the handler is installed before the line is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_the_listening_line_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    for _ in 0..3 {
        let s = Server::start_with(&[OsStr::new("--data"), dir.path().as_os_str()]);
        let status = s.terminate();
        assert!(status.success(), "engine: {status}");
    }
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = db.url();
    for _ in 0..3 {
        let s = Server::start_with(&[OsStr::new("--store"), OsStr::new(&url)]);
        let status = s.terminate();
        assert!(status.success(), "PostgreSQL: {status}");
    }
}
